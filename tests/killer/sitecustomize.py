"""Test helper: with ``FM_BIO_KILL_AT_STEP=N`` in the environment (and this folder on ``PYTHONPATH``), the
process kills itself (``os._exit(137)``, like SIGKILL: no clean-up, no checkpoint) right after training
step ``N`` (the N-th optimizer step of the run, counted from 1) of a PretrainModule."""

from __future__ import annotations

import os

_STEP = os.environ.get("FM_BIO_KILL_AT_STEP")
if _STEP:
    from fm_bio.training.pretrain_module import PretrainModule

    _original = PretrainModule.on_train_batch_end

    def _on_train_batch_end(self, outputs, batch, batch_idx):  # noqa: ANN001
        _original(self, outputs, batch, batch_idx)
        if self.trainer.global_step >= int(_STEP):
            os._exit(137)

    PretrainModule.on_train_batch_end = _on_train_batch_end
