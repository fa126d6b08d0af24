"""Jobs that ``python -m fm_bio.run task=<name>`` can run. Each task is a function ``(cfg) -> dict``
returning a small summary (also written to the run folder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

TaskFn = Callable[[DictConfig], dict[str, Any]]


def _preprocess(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.tasks.preprocess import preprocess_task

    return preprocess_task(cfg)


def _merge_shards(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.tasks.preprocess import merge_shards_task

    return merge_shards_task(cfg)


def _generate_demo(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.tasks.preprocess import generate_demo_task

    return generate_demo_task(cfg)


def _pretrain(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.tasks.pretrain import pretrain_task

    return pretrain_task(cfg)


def _finetune(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.tasks.finetune import finetune_task

    return finetune_task(cfg)


def _population(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.tasks.population import population_task

    return population_task(cfg)


def _loso(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.tasks.loso import loso_task

    return loso_task(cfg)


def _report(cfg: DictConfig) -> dict[str, Any]:
    from fm_bio.evaluation.report import report_task

    return report_task(cfg)


TASKS: dict[str, TaskFn] = {"preprocess": _preprocess, "merge_shards": _merge_shards, "generate_demo": _generate_demo, "pretrain": _pretrain,
                            "population": _population, "finetune": _finetune, "loso": _loso, "report": _report}
"""Registered tasks (imports are lazy so ``--help`` and config tests stay fast)."""
