"""``task=loso``: the leave-subjects-out study (``experiment=applewatch_loso``) in one command.

The cache's labelled subjects are dealt into ``loso.n_folds`` subject folds (deterministic by seed). For each
fold the other folds' subjects are the public population:

1. ``pretrain``: a foundation model is pretrained on them without labels (the fold's subjects are the
   study's clients, held out through ``split.subjects.holdout``);
2. ``population``: the FM + head is trained on their labels (for ``fm_population``);
3. every subject of the fold is a client: one ``finetune`` job per model of ``loso.models`` (Base vs FM, the
   classical baselines), each over the client's blocked time folds.

So every subject is a client exactly once and no client's data is ever seen by its FM, its population
model or the population baselines. The jobs' folders (``jobs/<client>-<model>-s<seed>/metrics.json``) are
read by the same report as the per-client study (``report.out_dir``, default ``experiments/<study>``), with
the study design and a comparison with published results added.

Every stage is composed by Hydra from the root config with this run's own overrides plus the stage's
(``loso.<stage>_overrides``), runs in this process, and is skipped when a re-run finds it finished, so an
interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fm_bio.data import cache
from fm_bio.data.cache import atomic_write_json
from fm_bio.tasks.pretrain import ensure_cache
from fm_bio.utils.config import settings_hash as config_settings_hash
from fm_bio.utils.config import to_plain

log = logging.getLogger(__name__)

STAGE_DONE_FILES = {"pretrain": "pretrain_summary.json", "population": "population_summary.json"}
"""A stage folder holding this file (written last) is finished and is not run again."""
FM_MODELS = ("fm_probe", "fm_finetune", "fm_population")
"""Models that need the fold's pretrained encoder."""


def subject_folds(subjects: list[str], n_folds: int, seed: int) -> list[list[str]]:
    """Deal ``subjects`` into ``n_folds`` disjoint folds of near-equal size, shuffled by ``seed``.

    ``n_folds`` equal to the number of subjects is leave-one-subject-out. Each fold is sorted.
    """
    subjects = sorted(set(subjects))
    if not 2 <= n_folds <= len(subjects):
        raise ValueError(f"loso.n_folds={n_folds} needs 2 <= n_folds <= the {len(subjects)} labelled subjects")
    order = np.random.default_rng(seed).permutation(len(subjects))
    return [sorted(subjects[i] for i in order[f::n_folds]) for f in range(n_folds)]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _user_overrides() -> list[str]:
    """This run's command-line overrides (empty outside a Hydra app)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def compose_stage(base_overrides: list[str], stage_overrides: list[str]) -> DictConfig:
    """The config of one stage: the root config with the run's overrides, then the stage's (which win)."""
    keys = {_key(o) for o in stage_overrides}
    kept = [o for o in base_overrides if _key(o) not in keys]
    return compose(config_name="config", overrides=[*kept, *stage_overrides])


def _list(values: list[str]) -> str:
    return "[" + ",".join(f"'{v}'" for v in values) + "]"


def settings_hash(cfg: DictConfig) -> str:
    """Hash of the settings that decide the study's results; adding a model to ``loso.models`` keeps it."""
    from omegaconf import OmegaConf

    trimmed = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if "loso" in trimmed and "models" in trimmed.loso:
        trimmed.loso.models = []
    return config_settings_hash(trimmed)


def check_resumable(plan_path: Path, plan: dict[str, Any]) -> None:
    """A re-run into a folder is a resumption only with the same data, folds and settings."""
    if not plan_path.exists():
        return
    old = json.loads(plan_path.read_text())
    differs = [k for k in ("dataset_root", "subject_folds", "settings_hash", "seed") if old.get(k) != plan.get(k)]
    if differs:
        raise SystemExit(f"{plan_path.parent} holds a study with other {differs} (its finished jobs would be mixed "
                         f"with new ones); run into a new folder (leave hydra.run.dir at its default) or restore "
                         f"the settings of that run")
    log.info("resuming the study in %s: finished stages and jobs are skipped", plan_path.parent)


def loso_task(cfg: DictConfig) -> dict[str, Any]:
    """Entry of ``task=loso``."""
    from fm_bio.tasks.finetune import finetune_task
    from fm_bio.tasks.population import population_task
    from fm_bio.tasks.pretrain import pretrain_task

    t_start = time.perf_counter()
    ensure_cache(cfg)
    out = Path(cfg.paths.output_dir)
    lcfg = to_plain(cfg.loso)
    entries = cache.load_manifest(cfg.dataset.cache_root)["subjects"]
    labelled = sorted(s for s, e in entries.items()  # subjects with scored epochs left after quality control
                      if sum(v for k, v in e.get("label_counts_kept", {}).items() if k != "unscored") > 0)
    folds = subject_folds(labelled, int(lcfg["n_folds"]), int(cfg.seed))
    models = list(lcfg["models"])
    plan = {"dataset": cfg.dataset.name, "dataset_root": str(cfg.dataset.root), "cache_root": str(cfg.dataset.cache_root),
            "seed": int(cfg.seed), "subject_folds": folds, "models": models, "settings_hash": settings_hash(cfg)}
    if lcfg.get("report_only"):
        return rebuild_report(cfg, out)
    check_resumable(out / "loso_plan.json", plan)
    atomic_write_json(out / "loso_plan.json", plan)
    log.info("leave-subjects-out study of %d subjects in %d folds %s; models %s", len(labelled), len(folds), folds, models)

    base = [o for o in _user_overrides() if _key(o) not in ("task", "hydra.run.dir", "hydra.sweep.dir")]
    common = [f"paths.root_dir={cfg.paths.root_dir}", f"dataset.cache_root={cfg.dataset.cache_root}",
              f"seed={int(cfg.seed)}"]
    jobs_dir = out / "jobs"
    timings: dict[str, float] = {}
    needs_fm = any(m in FM_MODELS for m in models)
    needs_population = "fm_population" in models
    for f, clients in enumerate(folds):
        fold_dir = out / f"fold{f}"
        held = [f"study.clients={_list(clients)}"]
        t0 = time.perf_counter()
        pre_dir = fold_dir / "pretrain"
        if needs_fm and not (pre_dir / STAGE_DONE_FILES["pretrain"]).exists():
            log.info("fold %d/%d: pretraining on the %d subjects outside %s", f + 1, len(folds),
                     len(labelled) - len(clients), clients)
            pretrain_task(compose_stage(base, [*common, *held, "task=pretrain", "ckpt_path=last", f"paths.output_dir={pre_dir}",
                                               *lcfg["pretrain_overrides"]]))
        encoder = pre_dir / "encoder.pt"
        pop_dir = fold_dir / "population"
        if needs_population and not (pop_dir / STAGE_DONE_FILES["population"]).exists():
            population_task(compose_stage(base, [*common, *held, "task=population", f"paths.output_dir={pop_dir}",
                                                 f"study.encoder_artifact={encoder}", *lcfg["population_overrides"]]))
        timings[f"fold{f}_pretrain_population_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        for client in clients:
            for model in models:
                job_dir = jobs_dir / f"{client}-{model}-s{int(cfg.seed)}"
                finetune_task(compose_stage(base, [
                    *common, *held, "task=finetune", f"model={model}", f"client='{client}'",
                    f"paths.output_dir={job_dir}", f"study.encoder_artifact={encoder}",
                    f"study.population_artifact={pop_dir / 'population.pt'}", *lcfg["finetune_overrides"]]))
        timings[f"fold{f}_clients_s"] = round(time.perf_counter() - t0, 1)

    report_dir = Path(cfg.report.out_dir)
    summary = build_study_report(cfg, out, plan)
    timings["total_s"] = round(time.perf_counter() - t_start, 1)
    result = {"plan": plan, "overrides": base, "timings": timings, "report": summary.get("results_md"),
              "models_summary": summary.get("models_summary"), "n_failed": summary.get("n_failed")}
    atomic_write_json(out / "loso_summary.json", result)
    atomic_write_json(report_dir / "loso_summary.json", result)
    log.info("leave-subjects-out study done in %.1f min: %s", timings["total_s"] / 60, summary.get("results_md"))
    return result


def build_study_report(cfg: DictConfig, out: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """The study's report (``report.out_dir``) from what the study folder ``out`` holds: the jobs, and each
    fold's pretraining summary for the design section."""
    from fm_bio.evaluation.report import build_report

    fold_info = []
    for f, clients in enumerate(plan["subject_folds"]):
        path = out / f"fold{f}" / "pretrain" / STAGE_DONE_FILES["pretrain"]
        pre = json.loads(path.read_text()) if path.exists() else {}
        fold_info.append({"fold": f, "clients": clients, "pretrain_subjects": pre.get("subjects", {}),
                          "final_probes": pre.get("final_probes_best_checkpoint", {})})
    report_dir = Path(cfg.report.out_dir)
    extra = loso_sections(plan, fold_info, out / "jobs", report_dir / "ablations")
    return build_report(out / "jobs", report_dir, study=str(cfg.study.name), baseline=str(cfg.report.baseline),
                        make_figures=bool(cfg.report.figures), extra_sections=extra)


def rebuild_report(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """``loso.report_only=true``: rebuild the report of the study in ``out`` (e.g. after more quality runs)
    from what it holds, running nothing."""
    plan_path = out / "loso_plan.json"
    if not plan_path.exists():
        raise SystemExit(f"loso.report_only=true: {out} holds no study (no loso_plan.json); pass the study's folder "
                         f"as hydra.run.dir=<it>")
    plan = json.loads(plan_path.read_text())
    summary = build_study_report(cfg, out, plan)
    old = json.loads((out / "loso_summary.json").read_text()) if (out / "loso_summary.json").exists() else {}
    result = {**old, "plan": plan, "report": summary.get("results_md"), "models_summary": summary.get("models_summary"),
              "n_failed": summary.get("n_failed")}
    atomic_write_json(Path(cfg.report.out_dir) / "loso_summary.json", result)
    log.info("report of the study in %s rebuilt: %s", out, summary.get("results_md"))
    return result


def loso_sections(plan: dict[str, Any], fold_info: list[dict[str, Any]], jobs_dir: Path, ablations_dir: Path) -> list[str]:
    """Markdown for the report: the study design (subject folds, what each FM saw), the quality work (other
    runs of the study whose reports are under ``ablations_dir``) and published results."""
    from fm_bio.evaluation.literature import literature_section

    lines = ["## Study design", "",
             f"Leave-subjects-out: the {sum(len(f['clients']) for f in fold_info)} labelled subjects of "
             f"`{plan['dataset_root']}` dealt into {len(fold_info)} subject folds (seed {plan['seed']}). For each fold a "
             "foundation model was pretrained (no labels) on the other folds' subjects, and `fm_population` and "
             "`classic_population` were trained on those subjects' labels; every subject of the fold was then a client. "
             "No client's data reached its FM or population models.", "",
             "| Fold | Clients | Pretraining subjects (train / val) | Stage probe kappa | Subject probe accuracy |",
             "|---|---|---|---|---|"]
    for f in fold_info:
        subj = f["pretrain_subjects"]
        n_train = subj.get("train", {}).get("n_subjects", "?")
        n_val = subj.get("val", {}).get("n_subjects", "?")
        probes = f["final_probes"]
        stage, subject, chance = (probes.get(k) for k in ("stage_kappa", "subject_acc", "subject_chance"))
        lines.append(f"| {f['fold']} | {', '.join(f['clients'])} | {n_train} / {n_val} | "
                     f"{'n/a' if stage is None else f'{stage:.3f}'} | "
                     f"{'n/a' if subject is None else f'{subject:.3f} (chance {chance:.3f})'} |")
    lines += ["", "Probes (best pretraining checkpoint): linear classifiers on the frozen embeddings of the "
              "pretraining subjects (labels are used only to measure); a subject probe near chance means the "
              "embeddings hide who the subject is.", ""]
    lines += quality_section(ablations_dir)
    lines += literature_section(jobs_dir)
    return lines


IGNORED_IN_ABLATIONS = ("experiment", "dataset.root", "report.", "hydra.", "loso.models", "progress", "n_jobs")
"""Overrides that do not define an ablation (left out of its description)."""


def quality_section(ablations_dir: Path) -> list[str]:
    """Markdown: one row per model of each ablation run (``<ablations_dir>/<name>/loso_summary.json``): the
    settings it changed and the mean over clients of kappa, macro-F1 and accuracy."""
    runs = sorted(ablations_dir.glob("*/loso_summary.json")) if ablations_dir.is_dir() else []
    lines = ["## Quality work", ""]
    if not runs:
        return lines + [f"No ablation runs under `{ablations_dir}` (see experiments/applewatch/README.md).", ""]
    lines += ["Other runs of this study (same subjects, folds and seed), each changing one setting from a reference "
              "run; `Changed` lists the overrides each passed on top of `experiment=applewatch_loso`, whose defaults "
              "were chosen from these runs. Mean ± sd over clients.", "",
              "| Run | Changed | Model | Clients | Kappa | Macro-F1 | Accuracy |", "|---|---|---|---|---|---|---|"]
    for path in runs:
        data = json.loads(path.read_text())
        changed = [o for o in data.get("overrides", []) if not _key(o).startswith(IGNORED_IN_ABLATIONS)]
        for model, entry in (data.get("models_summary") or {}).items():
            cells = [f"{entry[k]['mean']:.3f} ± {entry[k]['sd']:.3f}" for k in ("kappa", "macro_f1", "accuracy")]
            lines.append(f"| {path.parent.name} | {'; '.join(f'`{c}`' for c in changed) or 'defaults'} | {model} | "
                         f"{entry['n_clients']} | " + " | ".join(cells) + " |")
    return lines + [""]
