"""Loggers from the ``logger`` config group: CSV always when configured, wandb offline unless turned on.

wandb pitfalls handled here: the mode is set per run (never by changing ``WANDB_MODE`` mid-process),
and every job finishes its run (:func:`finish_loggers`), so Hydra multirun jobs never log into one run.

Privacy: only metrics, settings and figures of metrics reach wandb, never signals. Subject ids are replaced by
pseudonyms (``logger.wandb.subject_ids=pseudonym``, the default): a keyed hash with a random key kept beside
the runs (``<paths.log_dir>/.pseudonym_key``, never logged), stable across the jobs of a study so runs still
group by client. ``subject_ids=raw`` logs the real ids.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

log = logging.getLogger(__name__)


SUBJECT_ID_MODES = ("pseudonym", "raw")
_ID_KEYS = ("client",)
"""Config keys that hold one subject id; lists of ids sit under ``clients``, ``holdout`` and ``subjects``."""
_ID_LIST_KEYS = ("clients", "holdout", "subjects")


def pseudonym_key(log_dir: str | Path) -> bytes:
    """The random key of the pseudonyms, created once per log folder (mode 0600)."""
    path = Path(log_dir) / ".pseudonym_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".pseudonym_key.{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic and never overwrites a key another job created first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def subject_label(subject: Any, cfg: DictConfig | dict) -> str:
    """How ``subject`` appears in wandb: ``subj-<10 hex>`` (keyed hash) or the raw id (``subject_ids=raw``)."""
    w = (cfg.get("logger") or {}).get("wandb") or {}
    mode = w.get("subject_ids", "pseudonym")
    if mode not in SUBJECT_ID_MODES:
        raise ValueError(f"logger.wandb.subject_ids={mode!r}; options: {SUBJECT_ID_MODES}")
    if mode == "raw" or subject is None:
        return str(subject)
    key = pseudonym_key(cfg["paths"]["log_dir"])
    return "subj-" + hmac.new(key, str(subject).encode(), hashlib.sha256).hexdigest()[:10]


def _pseudonymise(node: Any, cfg: DictConfig | dict) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str | int):
                out[k] = subject_label(v, cfg)
            elif k in _ID_LIST_KEYS and isinstance(v, list):
                out[k] = [subject_label(x, cfg) for x in v]
            else:
                out[k] = _pseudonymise(v, cfg)
        return out
    if isinstance(node, list):
        return [_pseudonymise(x, cfg) for x in node]
    if isinstance(node, str) and (node.startswith(("/", "~")) or "\\" in node):
        return "<local path>"  # any remaining local path (log folders, user folders)
    return node


def build_loggers(cfg: DictConfig, run_name: str, tags: list[str] | None = None) -> list[Logger]:
    """CSV and/or wandb loggers as configured in ``cfg.logger``."""
    loggers: list[Logger] = []
    lcfg = cfg.get("logger") or {}
    if "csv" in lcfg:
        loggers.append(CSVLogger(save_dir=lcfg.csv.save_dir, name=lcfg.csv.name, version=""))
    if "wandb" in lcfg and "project" in lcfg.wandb:
        w = OmegaConf.to_container(lcfg.wandb, resolve=True)
        assert isinstance(w, dict)
        Path(w["save_dir"]).mkdir(parents=True, exist_ok=True)
        loggers.append(WandbLogger(
            project=w["project"], mode=w["mode"], save_dir=w["save_dir"], group=w.get("group"),
            tags=[*(w.get("tags") or []), *(tags or [])], name=run_name, job_type=str(cfg.task),
            config=plain_config(cfg),
        ))
    return loggers


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The job config as plain types for logging: no local paths, subject ids as :func:`subject_label`."""
    out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(out, dict)
    dataset = out.get("dataset", {})
    for key in ("root", "cache_root", "demo"):
        dataset.pop(key, None)
    dataset.get("datamodule", {}).pop("cache_root", None)
    out.pop("paths", None)
    for section in ("study", "report"):
        for key in ("encoder_artifact", "population_artifact", "out_dir", "sweep_dir"):
            (out.get(section) or {}).pop(key, None)
    for key in ("encoder_artifact", "population_artifact"):
        (out.get("model") or {}).pop(key, None)
    return _pseudonymise(out, cfg)


def finish_loggers(loggers: list[Logger]) -> None:
    """Flush every logger and finish wandb runs (call in a ``finally``)."""
    for lg in loggers:
        try:
            lg.finalize("success")
        except Exception as err:  # finishing must never hide the job's own error
            log.warning("logger %s did not finalise: %s", type(lg).__name__, err)
        if isinstance(lg, WandbLogger):
            import wandb

            if wandb.run is not None:
                wandb.finish()
