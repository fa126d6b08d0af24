"""The sweep report on a hand-made sweep folder: tables, paired tests, pooled metrics, figures, edge cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from fm_bio.data.labels import CLASS_NAMES
from fm_bio.evaluation.metrics import compute_metrics
from fm_bio.evaluation.report import build_report, report_task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLIENTS = [f"{i:04d}" for i in range(1, 7)]
FM_WORSE_CLIENT = "0005"
TWO_SEED_CLIENT = "0003"
N_EPOCHS = 120


def night(rng: np.random.Generator, n: int) -> np.ndarray:
    """A blocky hypnogram: runs of one stage, deep early and REM late, a few masked epochs."""
    stages = []
    while len(stages) < n:
        frac = len(stages) / n
        p = [0.15, 0.45, 0.3 * (1 - frac), 0.1 + 0.3 * frac]
        stages += [int(rng.choice(4, p=np.array(p) / sum(p)))] * int(rng.integers(3, 12))
    y = np.array(stages[:n])
    y[rng.choice(n, 3, replace=False)] = -1
    return y


def corrupt(y_true: np.ndarray, where: np.ndarray) -> np.ndarray:
    y = np.clip(y_true.copy(), 0, 3)
    y[where] = (y[where] + 1) % 4
    return y


def write_job(folder: Path, client: str, model: str, seed: int, y_true: np.ndarray | None = None,
              y_pred: np.ndarray | None = None, study: str = "demo_study", error: str | None = None) -> None:
    folder.mkdir(parents=True)
    record = {"study": study, "dataset": "mesa", "client": client, "model": model, "seed": seed,
              "split": {"scheme": "blocked_kfold", "n_folds": 5}, "status": "failed" if error else "ok",
              "error": error, "metrics": None, "folds": [],
              "encoder_artifact": None if model == "base" else "outputs/pretrain/encoder.pt"}
    if error is None:
        epoch_index = np.arange(len(y_true)) + 2
        fold = np.arange(len(y_true)) * 5 // len(y_true)
        pd.DataFrame({"epoch_index": epoch_index, "y_true": y_true, "y_pred": y_pred, "fold": fold}).to_csv(
            folder / "predictions.csv", index=False)
        record["metrics"] = compute_metrics(y_true, y_pred)
        record["folds"] = [{"fold": k, "n_test": int((fold == k).sum())} for k in range(5)]
    (folder / "metrics.json").write_text(json.dumps(record, indent=2))


def make_sweep(root: Path, clients: list[str], study: str = "demo_study") -> dict:
    """Jobs base + fm_finetune per client (FM better on all but FM_WORSE_CLIENT), one client with 2 seeds,
    one failed fm_probe job. Returns the truth: {(client, model, seed): (y_true, y_pred)}."""
    rng = np.random.default_rng(0)
    truth, num = {}, 0
    for client in clients:
        for seed in (42, 43) if client == TWO_SEED_CLIENT else (42,):
            y_true = night(rng, N_EPOCHS)
            errors = rng.choice(N_EPOCHS, 50, replace=False)
            small, big = errors[:15], errors  # the better model's errors are a subset of the worse one's
            base_err, fm_err = (small, big) if client == FM_WORSE_CLIENT else (big, small)
            for model, err in (("base", base_err), ("fm_finetune", fm_err)):
                y_pred = corrupt(y_true, err)
                sub = root / (f"nested/deeper/{num}" if num % 5 == 4 else str(num))  # jobs at any depth
                write_job(sub, client, model, seed, y_true, y_pred, study=study)
                truth[(client, model, seed)] = (y_true, y_pred)
                num += 1
    write_job(root / str(num), clients[1], "fm_probe", 42, study=study,
              error="RuntimeError: encoder.pt not found\nTraceback (most recent call last): ...")
    return truth


def per_client_means(truth: dict, model: str, key: str) -> dict[str, float]:
    """Per-client metric averaged over seeds, computed independently of the report."""
    out: dict[str, list[float]] = {}
    for (client, m, _), (y_true, y_pred) in truth.items():
        if m == model:
            out.setdefault(client, []).append(compute_metrics(y_true, y_pred)[key])
    return {c: float(np.mean(v)) for c, v in out.items()}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    sweep = root / "finetune-multirun" / "2026-01-01_00-00-00_000000"
    truth = make_sweep(sweep, CLIENTS)
    out = root / "experiments" / "demo_study"
    summary = build_report(sweep, out)
    return {"sweep": sweep, "out": out, "truth": truth, "summary": summary,
            "md": (out / "results.md").read_text()}


def table_row(md: str, first_cells: str) -> str:
    rows = [line for line in md.splitlines() if line.startswith(f"| {first_cells} |")]
    assert len(rows) == 1, f"expected one row starting with {first_cells!r}, got {rows}"
    return rows[0]


def test_results_md_has_every_client_and_model_row(report):
    md = report["md"]
    assert "| Client | Model | Accuracy | F1 | Kappa |" in md
    assert "demo_study" in md and "mesa" in md and "blocked_kfold (5 folds)" in md
    assert "2026-01-01_00-00-00_000000" in md
    assert "Clients: 6" in md
    for client in CLIENTS:
        for model in ("base", "fm_finetune"):
            row = table_row(md, f"{client} | {model}")
            m = compute_metrics(*report["truth"][(client, model, 42)])
            if client != TWO_SEED_CLIENT:
                assert row.split("|")[3:6] == [f" {m[k]:.3f} " for k in ("accuracy", "macro_f1", "kappa")]
    # rows sorted by client, then base before fm_finetune
    section = md.split("## Per client")[1].split("## Per model")[0]
    order = [line.split("|")[1:3] for line in section.splitlines() if re.match(r"\| 000\d \| ", line)]
    rank = {" base ": 0, " fm_probe ": 1, " fm_finetune ": 2}
    assert len(order) == 6 * 2 + 1
    assert order == sorted(order, key=lambda r: (r[0], rank[r[1]]))


def test_two_seeds_shown_as_mean_sd(report):
    row = table_row(report["md"], f"{TWO_SEED_CLIENT} | fm_finetune")
    values = [compute_metrics(*report["truth"][(TWO_SEED_CLIENT, "fm_finetune", s)])["kappa"] for s in (42, 43)]
    assert f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" in row


def test_wilcoxon_matches_scipy_on_per_client_values(report):
    truth, summary, md = report["truth"], report["summary"], report["md"]
    for key, label in (("macro_f1", "F1"), ("kappa", "Kappa"), ("accuracy", "Accuracy")):
        base, fm = per_client_means(truth, "base", key), per_client_means(truth, "fm_finetune", key)
        res = stats.wilcoxon([fm[c] for c in CLIENTS], [base[c] for c in CLIENTS])
        t = summary["paired_tests"]["fm_finetune"][key]
        assert t["n"] == 6
        assert t["p"] == pytest.approx(res.pvalue, rel=1e-12)
        assert t["statistic"] == pytest.approx(res.statistic)
        assert t["n_better"] == 5 and t["n_worse"] == 1
        assert t["median_diff"] == pytest.approx(np.median([fm[c] - base[c] for c in CLIENTS]))
        row = table_row(md, f"fm_finetune vs base | {label}")
        assert "n=6" in row and f"p={res.pvalue:.4g}" in row and "5 / 1" in row
    # fm_probe never succeeded: reported as untestable, not a crash
    assert summary["paired_tests"]["fm_probe"]["macro_f1"]["n"] == 0
    assert "no client has both models" in table_row(md, "fm_probe vs base | F1")


def test_failed_and_missing_jobs_are_listed(report):
    md, summary = report["md"], report["summary"]
    row = table_row(md, "0002 | fm_probe | 42")
    assert "RuntimeError: encoder.pt not found" in row and "Traceback" not in row
    assert summary["n_failed"] == 1
    assert summary["failed"][0]["client"] == "0002"
    assert "| 0002 | fm_probe | failed | failed | failed |" in md
    missing = {(m["client"], m["model"]) for m in summary["missing"]}
    assert missing == {(c, "fm_probe") for c in CLIENTS if c != "0002"}
    assert "0001/fm_probe" in md


def test_mean_sd_over_clients(report):
    truth, summary, md = report["truth"], report["summary"], report["md"]
    row = table_row(md, "fm_finetune | 6")
    for key in ("accuracy", "macro_f1", "kappa"):
        values = list(per_client_means(truth, "fm_finetune", key).values())
        mean, sd = np.mean(values), np.std(values, ddof=1)
        assert summary["models_summary"]["fm_finetune"][key]["mean"] == pytest.approx(mean)
        assert summary["models_summary"]["fm_finetune"][key]["sd"] == pytest.approx(sd)
        assert f"{mean:.3f} ± {sd:.3f}" in row


def test_pooled_metrics_equal_concatenated_predictions(report):
    truth, summary = report["truth"], report["summary"]
    for model in ("base", "fm_finetune"):
        # clients have different seed sets, so each client contributes its lowest seed (42)
        y_true = np.concatenate([truth[(c, model, 42)][0] for c in CLIENTS])
        y_pred = np.concatenate([truth[(c, model, 42)][1] for c in CLIENTS])
        ref = compute_metrics(y_true, y_pred)
        pooled = summary["models_summary"][model]["pooled"]
        assert pooled["method"] == "each client's lowest seed"
        assert pooled["n_clients"] == 6 and pooled["n_epochs"] == ref["n_epochs"]
        assert pooled["confusion"] == ref["confusion"]
        for key in ("accuracy", "macro_f1", "kappa", *(f"f1_{c}" for c in CLASS_NAMES)):
            assert pooled[key] == pytest.approx(ref[key]), key
        assert f"{ref['macro_f1']:.3f}" in table_row(report["md"], f"{model} | 6")


def test_results_csv_one_row_per_job(report):
    df = pd.read_csv(report["out"] / "results.csv", dtype={"client": str})
    assert list(df.columns[:4]) == ["client", "model", "seed", "status"]
    assert {"accuracy", "macro_f1", "kappa", "f1_wake", "f1_light", "f1_deep", "f1_rem", "n_epochs"} <= set(df.columns)
    assert len(df) == 6 * 2 + 2 + 1
    assert (df["status"] == "failed").sum() == 1
    ok = df[df["status"] == "ok"].set_index(["client", "model", "seed"])
    for (client, model, seed), (y_true, y_pred) in report["truth"].items():
        m = compute_metrics(y_true, y_pred)
        assert ok.loc[(client, model, seed), "macro_f1"] == pytest.approx(m["macro_f1"], abs=1e-5)
        assert ok.loc[(client, model, seed), "n_epochs"] == m["n_epochs"]


def test_figures_exist_and_are_linked(report):
    fig_dir, md = report["out"] / "figures", report["md"]
    expected = [f"hypnogram_{c}.png" for c in CLIENTS]
    expected += [f"confusion_{c}_{m}.png" for c in CLIENTS for m in ("base", "fm_finetune")]
    expected += ["paired_macro_f1.png", "confusion_pooled_base.png", "confusion_pooled_fm_finetune.png"]
    for name in expected:
        data = (fig_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
        assert f"(figures/{name})" in md, name
    assert not list(fig_dir.glob("*.tmp*"))


def test_rerun_overwrites_and_removes_stale_figures(report, tmp_path):
    out = tmp_path / "out"
    stale = out / "figures" / "hypnogram_9999.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (out / "results.md").write_text("old report")
    build_report(report["sweep"], out, make_figures=False)
    assert not stale.exists()
    assert (out / "results.md").read_text().startswith("# Per-client sleep staging: demo_study")
    assert "No figures were drawn." in (out / "results.md").read_text()


def test_two_clients_do_not_crash_and_say_underpowered(tmp_path):
    sweep = tmp_path / "sweep"
    truth = make_sweep(sweep, CLIENTS[:2])
    summary = build_report(sweep, tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    t = summary["paired_tests"]["fm_finetune"]["macro_f1"]
    assert t["n"] == 2 and t["underpowered"]
    base, fm = per_client_means(truth, "base", "macro_f1"), per_client_means(truth, "fm_finetune", "macro_f1")
    assert t["p"] == pytest.approx(stats.wilcoxon([fm[c] for c in CLIENTS[:2]], [base[c] for c in CLIENTS[:2]]).pvalue)
    assert "underpowered" in table_row(md, "fm_finetune vs base | F1").lower()
    assert "Underpowered" in md


def test_single_client_and_missing_baseline(tmp_path):
    sweep = tmp_path / "sweep"
    y = np.array([0, 1, 1, 2, 3, 3, 1])
    write_job(sweep / "0", "0001", "fm_finetune", 1, y, y)
    summary = build_report(sweep, tmp_path / "out", baseline="base")
    assert summary["paired_tests"] == {}
    assert "not in this sweep" in (tmp_path / "out" / "results.md").read_text()


def test_empty_sweep_gives_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.json under .*empty"):
        build_report(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nowhere", tmp_path / "out")


def test_mixed_studies_need_a_study(tmp_path):
    sweep = tmp_path / "sweep"
    y = np.array([0, 1, 2, 3])
    write_job(sweep / "0", "0001", "base", 1, y, y, study="a")
    write_job(sweep / "1", "0001", "base", 1, y, y, study="b")
    with pytest.raises(ValueError, match="mixes studies \\['a', 'b'\\]"):
        build_report(sweep, tmp_path / "out")
    summary = build_report(sweep, tmp_path / "out", study="b", make_figures=False)
    assert summary["study"] == "b" and summary["n_jobs"] == 1


def test_corrupt_metrics_json_is_a_failed_job(tmp_path):
    sweep = tmp_path / "sweep"
    y = np.array([0, 1, 2, 3])
    write_job(sweep / "0", "0001", "base", 1, y, y)
    (sweep / "1").mkdir()
    (sweep / "1" / "metrics.json").write_text("{not json")
    summary = build_report(sweep, tmp_path / "out", make_figures=False)
    assert summary["n_failed"] == 1 and "unreadable" in summary["failed"][0]["error"]


def test_report_task_latest(tmp_path, report):
    log_dir = tmp_path / "outputs"
    older = log_dir / "finetune-multirun" / "2025-01-01_00-00-00_000000"
    older.mkdir(parents=True)
    newest = log_dir / "finetune-multirun" / "2026-02-01_00-00-00_000000"
    y = np.array([0, 1, 2, 3])
    write_job(newest / "0", "0001", "base", 1, y, y, study="latest_study")
    cfg = OmegaConf.create({"paths": {"root_dir": str(tmp_path), "log_dir": str(log_dir)},
                            "report": {"sweep_dir": "latest", "out_dir": None, "study": None, "baseline": "base"}})
    summary = report_task(cfg)
    assert summary["sweep_dir"] == str(newest)
    assert Path(summary["results_md"]) == tmp_path / "experiments" / "latest_study" / "results.md"
    assert Path(summary["results_md"]).is_file()
    json.dumps(summary)  # the summary is JSON-able (for summary.json)


def test_all_jobs_failed_is_reported_not_a_crash(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep / "0", "0001", "base", 1, error="MemoryError")
    write_job(sweep / "1", "0001", "fm_finetune", 1, error="ValueError: bad config\nmore")
    summary = build_report(sweep, tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    assert summary["n_ok"] == 0 and summary["n_failed"] == 2
    assert "no client has both models" in table_row(md, "fm_finetune vs base | F1")
    assert "| 0001 | fm_finetune | 1 | ValueError: bad config |" in md


def test_latest_sweep_prefers_the_study_folder(tmp_path):
    import os

    from fm_bio.evaluation.report import latest_sweep

    root = tmp_path / "finetune-multirun"
    old, new, other = root / "mesa_demo" / "2026-01-01", root / "mesa_demo" / "2026-01-02", root / "aw" / "2026-02-01"
    for i, p in enumerate((old, new, other)):
        p.mkdir(parents=True)
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    assert latest_sweep(tmp_path, study="mesa_demo") == new
    assert latest_sweep(tmp_path, study="aw") == other
    with pytest.raises(FileNotFoundError, match="report.sweep_dir"):
        latest_sweep(tmp_path / "nothing")
