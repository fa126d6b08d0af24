"""Export a client's trained classifier for deployment (a watch, a phone, a server without fm-bio).

The exported file is a ``torch.export`` program (``.pt2``): it runs with ``torch.export.load(path).module()``
alone (no fm-bio, no Lightning, no Python source of the model). Its inputs are one float tensor
``[B, L, T]`` per modality, in the order stored in the file's metadata, then (only for a classifier with
``time_of_night``) ``epoch_index`` int64 ``[B]``, then ``modality_present`` bool ``[B, M]``; it returns the class logits ``[B, 4]``, what :meth:`ClassifierModule.forward` returns for the
same batch dict in eval mode. The batch size is dynamic (1 epoch when streaming, a whole night at once).

The exported graph calls the encoder's branches and the head directly and fuses the branch embeddings by
the masked mean of :meth:`MultimodalEncoder.forward` (whose Python-side input checks would fix the batch
size in the graph); :func:`export_classifier` checks the export against the eager model before writing it.
(``torch.jit.trace`` also works but is deprecated in torch 2.13.)
"""

from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fm_bio.data.labels import CLASS_NAMES
from fm_bio.data.records import EPOCH_S

log = logging.getLogger(__name__)

METADATA_FILE = "fm_bio.json"
MAX_BATCH = 1 << 16


class ExportableClassifier(nn.Module):
    """Encoder branches + masked-mean fusion + head with a tensor-only signature (what export needs).

    ``forward(*modality_tensors, [epoch_index,] modality_present)``: tensors in ``self.modalities`` order;
    ``epoch_index`` only with ``time_of_night`` (the head then also sees the hours since the recording start).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, modalities: tuple[str, ...], time_of_night: bool = False) -> None:
        super().__init__()
        self.branches = nn.ModuleList([encoder.branches[m] for m in modalities])
        self.head = head
        self.modalities = tuple(modalities)
        self.time_of_night = bool(time_of_night)

    def forward(self, *args: Tensor) -> Tensor:
        if self.time_of_night:
            *xs, epoch_index, present = args
        else:
            *xs, present = args
        stacked = torch.stack([branch(x) for branch, x in zip(self.branches, xs, strict=True)], dim=1)  # [B, M, D]
        w = present.to(stacked.dtype)  # a modality flagged absent is left out of the sample's mean
        fused = (stacked * w.unsqueeze(-1)).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        if self.time_of_night:
            fused = torch.cat([fused, (epoch_index.to(fused.dtype) * (EPOCH_S / 3600.0))[:, None]], dim=1)
        return self.head(fused)


def example_inputs(batch: Mapping[str, Tensor], modalities: tuple[str, ...], time_of_night: bool = False) -> tuple[Tensor, ...]:
    """The exported model's positional inputs from a batch dict (``modality_present`` all True when absent)."""
    xs = [batch[m].float() for m in modalities]
    present = batch.get("modality_present")
    if present is None:
        present = torch.ones(xs[0].shape[0], len(modalities), dtype=torch.bool)
    clock = [batch["epoch_index"].long()] if time_of_night else []
    return (*xs, *clock, present.bool())


def _random_inputs(shapes: Mapping[str, tuple[int, int]], modalities: tuple[str, ...], batch_size: int,
                   seed: int, time_of_night: bool = False) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(batch_size, *shapes[m], generator=gen) for m in modalities]
    clock = [torch.randint(0, 1200, (batch_size,), generator=gen)] if time_of_night else []
    present = torch.rand(batch_size, len(modalities), generator=gen) > 0.2
    return (*xs, *clock, present)


def export_classifier(module: nn.Module, example_batch: Mapping[str, Tensor], path: str | Path,
                      atol: float = 1e-4) -> Path:
    """Export ``module`` (a :class:`~fm_bio.training.classifier_module.ClassifierModule`) in eval mode with
    ``torch.export`` to ``path`` (``.pt2``, written atomically), with its metadata (modalities in input
    order, input shapes, class names, variant) as the extra file ``fm_bio.json``.

    The export is checked against the eager module (its own ``forward`` on the batch dict) on
    ``example_batch`` and on random inputs of another batch size with some modalities flagged absent (same
    argmax, logits within ``atol``); a mismatch raises ``RuntimeError`` and nothing is written.
    """
    path = Path(path)
    modalities = tuple(module.modalities)
    shapes = {m: tuple(module.encoder.input_shapes[m]) for m in modalities}
    was_training = module.training
    module.eval()
    try:
        clock = bool(getattr(module, "time_of_night", False))
        wrapper = ExportableClassifier(module.encoder, module.head, modalities, clock).eval()
        # Copies: the program stores its example inputs, and a slice would drag its whole base tensor along
        # (a whole night of ECG, ~30 MB, in a 0.5 MB model).
        example = tuple(x.detach().clone() for x in example_inputs(example_batch, modalities, clock))
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        with torch.no_grad(), warnings.catch_warnings():
            # nn.GRU re-assigns its flat weight list while being traced: harmless, the weights are exported.
            warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights")
            program = torch.export.export(wrapper, example, dynamic_shapes=(tuple({0: batch} for _ in example),))
            exported = program.module()
            other = _random_inputs(shapes, modalities, batch_size=int(example[0].shape[0]) + 3, seed=0, time_of_night=clock)
            for inputs in (example, other):
                eager_batch = {**dict(zip(modalities, inputs[: len(modalities)], strict=True)), "modality_present": inputs[-1]}
                if clock:
                    eager_batch["epoch_index"] = inputs[len(modalities)]
                want, got = module(eager_batch), exported(*inputs)
                if not torch.equal(want.argmax(-1), got.argmax(-1)) or not torch.allclose(want, got, atol=atol, rtol=0):
                    raise RuntimeError(f"the exported classifier differs from the eager one on a batch of "
                                       f"{inputs[0].shape[0]} (max |logit diff| {float((want - got).abs().max()):.3g}); "
                                       f"not writing {path}")
    finally:
        module.train(was_training)
    meta = {"format": 1, "modalities": list(modalities), "input_shapes": {m: list(s) for m, s in shapes.items()},
            "time_of_night": clock,
            "class_names": list(CLASS_NAMES), "variant": getattr(module, "variant", None),
            "signature": "(*[float [B, L, T] per modality], " + ("epoch_index int64 [B], " if clock else "")
                         + "modality_present bool [B, M]) -> logits [B, 4]"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.pt2")  # torch.export.save wants a .pt2 name
    torch.export.save(program, tmp, extra_files={METADATA_FILE: json.dumps(meta)})
    os.replace(tmp, path)
    log.info("exported the %s classifier (%s) to %s", meta["variant"], ", ".join(modalities), path)
    return path


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The exported model (a callable ``torch.fx.GraphModule``, CPU) and its metadata."""
    files = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=files)
    return program.module(), json.loads(files[METADATA_FILE])
