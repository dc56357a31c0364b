"""Raw per-run results -> the paper's tables (mean ± std over seeds, the paper's numbers beside).

Runs are collected from every ``metrics.json`` under the output roots into small JSON files
under ``results/runs/`` (committed), so tables and figures regenerate without re-running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

METRICS = ("accuracy", "macro_f1", "weighted_f1")
# the loop options beyond the paper, at their defaults (an A/B run changes one of them)
OPTION_DEFAULTS = {"mining": "auto", "mining_scope": "history", "report_confusions": 0, "selection_fraction": 0.0}
DATASET_NAMES = {"ag_news": "AG-news", "yahoo_answers": "Yahoo Answers", "huffpost": "Huffington Post",
                 "amzn_reviews": "AMZN Reviews", "imdb": "IMDB", "inshorts": "Inshorts"}
# Paper Table 2 (accuracy, macro-F1, weighted-F1; means over 5 seeds)
PAPER_TABLE2 = {
    ("ag_news", "baseline"): (0.884, 0.884, 0.884), ("ag_news", "pgkd"): (0.895, 0.894, 0.894),
    ("ag_news", "zero_shot"): (0.826, 0.821, 0.822),
    ("yahoo_answers", "baseline"): (0.649, 0.657, 0.657), ("yahoo_answers", "pgkd"): (0.685, 0.688, 0.688),
    ("yahoo_answers", "zero_shot"): (0.680, 0.676, 0.676),
    ("huffpost", "baseline"): (0.474, 0.214, 0.411), ("huffpost", "pgkd"): (0.519, 0.330, 0.495),
    ("huffpost", "zero_shot"): (0.442, 0.332, 0.435),
    ("amzn_reviews", "baseline"): (0.320, 0.074, 0.244), ("amzn_reviews", "pgkd"): (0.443, 0.159, 0.382),
    ("amzn_reviews", "zero_shot"): (0.416, 0.364, 0.414),
}
PAPER_TABLE3 = {("imdb", "baseline"): 0.872, ("imdb", "pgkd"): 0.908,
                ("inshorts", "baseline"): 0.933, ("inshorts", "pgkd"): 0.943}
PAPER_TABLE4 = {  # accuracy
    ("ag_news", "full"): 0.895, ("ag_news", "no_validation"): 0.893, ("ag_news", "no_hard_negatives"): 0.887,
    ("yahoo_answers", "full"): 0.685, ("yahoo_answers", "no_validation"): 0.669,
    ("yahoo_answers", "no_hard_negatives"): 0.675,
    ("huffpost", "full"): 0.519, ("huffpost", "no_validation"): 0.501, ("huffpost", "no_hard_negatives"): 0.510,
    ("amzn_reviews", "full"): 0.443, ("amzn_reviews", "no_validation"): 0.419,
    ("amzn_reviews", "no_hard_negatives"): 0.433,
}
PAPER_TABLE6 = {  # (dataset, n): (baseline acc, pgkd acc)
    ("ag_news", 1000): (0.884, 0.895), ("ag_news", 2500): (0.899, 0.910), ("ag_news", 5000): (0.903, 0.911),
    ("ag_news", 10000): (0.914, 0.917), ("yahoo_answers", 1000): (0.649, 0.685),
    ("yahoo_answers", 2500): (0.700, 0.708), ("yahoo_answers", 5000): (0.702, 0.719),
    ("yahoo_answers", 10000): (0.721, 0.725), ("huffpost", 1000): (0.474, 0.519),
    ("huffpost", 2500): (0.537, 0.553), ("huffpost", 5000): (0.551, 0.564), ("huffpost", 10000): (0.601, 0.605),
    ("amzn_reviews", 1000): (0.320, 0.443), ("amzn_reviews", 2500): (0.541, 0.602),
    ("amzn_reviews", 5000): (0.648, 0.666), ("amzn_reviews", 10000): (0.687, 0.694),
}


def compact(metrics: dict) -> dict:
    """The part of a run's metrics.json worth committing (no per-class tables, no prompts)."""
    keep = ("run_name", "dataset", "student", "method", "seed", "n_annotated", "n_classes", "status", "best_step",
            "stopped", "invalid_rate", "limit", "n_evaluated", "sizes", "timing", "teacher", "per_batch_of_64",
            "samples", "config_hash", "commit", "dirty", "versions", "continued_from")
    out = {k: metrics[k] for k in keep if k in metrics}
    for split in ("val", "test"):
        if split in metrics:
            out[split] = {k: metrics[split].get(k) for k in ("loss", "n", *METRICS) if k in metrics[split]}
    if "model_0" in metrics:
        out["model_0_test"] = {k: metrics["model_0"]["test"].get(k) for k in ("loss", *METRICS)}
    if "steps" in metrics:
        out["steps"] = [{k: s.get(k) for k in ("step", "val_loss", "val_accuracy", "val_macro_f1", "accepted",
                                                 "rejected", "calls", "wall_s")} for s in metrics["steps"]]
    if "settings" in metrics:
        out["kd_steps"] = metrics["settings"].get("num_kd_steps")
        out["options"] = {k: metrics["settings"].get(k) for k in OPTION_DEFAULTS if k in metrics["settings"]}
    return out


# tasks whose runs replay committed runs (``make demo``): never collected as results
REPLAY_TASKS = ("demo",)
# the tasks whose runs Tables 2 and 3 are made of (the sweeps of conf/experiment and zero-shot)
TABLE2_TASKS = ("table2", "table3", "zero_shot")


def collect(roots: Iterable[str | Path], into: str | Path, transcripts_into: str | Path | None = None) -> int:
    """Copy every finished run's compact metrics under ``roots`` to ``into/<run_name>.json`` and,
    with ``transcripts_into``, its teacher transcript (prompts and replies, gzipped) beside."""
    into, count = Path(into), 0
    for root in roots:
        for path in sorted(Path(root).rglob("metrics.json")):
            metrics = json.loads(path.read_text())
            if metrics.get("status") != "finished" or "run_name" not in metrics:
                continue
            if metrics["run_name"].split("/")[0] in REPLAY_TASKS:
                continue  # re-creations of committed runs, not results of their own
            name = metrics["run_name"].replace("/", "__")
            target = into / f"{name}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(compact(metrics), indent=1))
            count += 1
            if transcripts_into and (path.parent / "teacher_ledger.jsonl").exists():
                export_run_transcript(path.parent, Path(transcripts_into) / f"{name}.jsonl.gz")
    return count


def export_run_transcript(run_dir: Path, out_path: Path) -> int:
    """The transcript of a finished run, replies taken from the cache its config names."""
    from omegaconf import OmegaConf

    from pgkd.teacher.store import ResponseCache
    from pgkd.transcripts import export_transcript

    cache_path = OmegaConf.load(run_dir / "config.yaml").get("teacher", {}).get("cache_path")
    if not cache_path or not Path(cache_path).exists():
        return 0
    return export_transcript(run_dir, ResponseCache(cache_path), out_path)


def load_runs(folder: str | Path) -> pd.DataFrame:
    """One row per run: task, dataset, method kind, ablation, size, seed, test metrics."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        run = json.loads(path.read_text())
        method = run["method"]
        kind = ("zero_shot" if method.startswith("zero_shot") else "baseline" if method == "baseline" else "pgkd")
        ablation = method.rsplit("-", 1)[-1] if kind == "pgkd" else ""
        rows.append({"task": run["run_name"].split("/")[0], "dataset": run["dataset"], "kind": kind,
                     "ablation": ablation, "n_annotated": run.get("n_annotated"), "seed": run.get("seed"),
                     "student": run.get("student", ""), "teacher": (run.get("teacher") or {}).get("model", ""),
                     "kd_steps": run.get("kd_steps"), "test_n": (run.get("test") or {}).get("n") or run.get("n_evaluated"),
                     "commit": short_commit(run),
                     "variant": ", ".join(f"{k}={v}" for k, v in (run.get("options") or {}).items()
                                          if v != OPTION_DEFAULTS.get(k)) or "defaults",
                     **{f"model_0_{m}": (run.get("model_0_test") or {}).get(m) for m in METRICS},
                     **{m: run["test"][m] for m in METRICS}})
    return pd.DataFrame(rows)


def short_commit(run: dict) -> str:
    """The commit a run was made at (``+dirty`` with uncommitted changes); runs from before
    provenance was recorded say so."""
    if not run.get("commit"):
        return "unrecorded"
    return run["commit"][:7] + ("+dirty" if run.get("dirty") else "")


def teachers_of(runs: pd.DataFrame) -> list[str]:
    """The teachers in ``runs``: PGKD and zero-shot rows never pool two teachers either."""
    return sorted(set(runs.teacher) - {""}) or [""]


def students_of(runs: pd.DataFrame) -> list[str]:
    """The students in ``runs``: tables never pool two students into one mean."""
    return sorted(set(runs.student) - {""}) or [""]


def mean_std(values: pd.Series) -> str:
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def mean_with_interval(deltas: pd.Series) -> str:
    """``+0.012 [+0.001, +0.022]``: the mean of paired differences with a 95 % t interval (the
    mean alone for one pair, ``-`` for none)."""
    from scipy import stats

    deltas = deltas.dropna()
    if len(deltas) == 0:
        return "-"
    mean = deltas.mean()
    if len(deltas) == 1:
        return f"{mean:+.3f}"
    half = stats.t.ppf(0.975, len(deltas) - 1) * deltas.std(ddof=1) / len(deltas) ** 0.5
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def paired_delta(group: pd.DataFrame, metric: str) -> str:
    """Mean per-seed change of the kept model vs the same run's model_0, with a 95 % t interval
    (each seed is its own control: the seed fixes the annotated sample and the initialisation)."""
    column = f"model_0_{metric}"
    if column not in group or group[column].isna().all():
        return "-"
    return mean_with_interval(group[metric] - group[column])


def _header(title: str, runs: pd.DataFrame) -> str:
    students = ", ".join(sorted(set(runs.student) - {""})) or "-"
    teachers = ", ".join(sorted(set(runs.teacher) - {""})) or "-"
    steps = ", ".join(str(int(s)) for s in sorted(set(runs.kd_steps.dropna()))) or "-"
    sizes = ", ".join(str(int(s)) for s in sorted(set(runs.test_n.dropna())))
    commits = ", ".join(f"{c} ({n} runs)" for c, n in sorted(runs.commit.value_counts().items())) if "commit" in runs else "-"
    return (f"# {title}\n\nStudent: {students}. Teacher: {teachers}. KD steps: {steps}. "
            f"Test texts per run: {sizes}. Mean ± std over seeds (n = seeds). Paper: BERT-base student, "
            "Claude 3 Sonnet teacher, 10 KD steps, full test splits, 5 seeds.\n\n"
            f"Rows made at commit(s): {commits or '-'}.\n\n")


def table2(runs: pd.DataFrame, datasets: Iterable[str] = ("ag_news", "yahoo_answers", "huffpost", "amzn_reviews"),
           metrics: Iterable[str] = METRICS, paper: dict = PAPER_TABLE2, title: str = "Table 2") -> tuple[str, pd.DataFrame]:
    """Rows baseline / +PGKD (full) / teacher zero-shot per dataset; the paper's numbers beside."""
    metrics = list(metrics)
    # the ablation and sample-size sweeps, A/B and single runs have tables of their own
    selected = runs[(runs.n_annotated.fillna(1000) == 1000) & runs.ablation.isin(["", "full"])
                    & runs.task.isin(TABLE2_TASKS)]
    rows = []
    for dataset in datasets:
        on_dataset = selected[selected.dataset == dataset]
        for kind, label in (("baseline", "student"), ("pgkd", "student + PGKD"), ("zero_shot", "teacher zero-shot")):
            reference = paper.get((dataset, kind))
            reference = reference if isinstance(reference, tuple) else (reference,) if reference is not None else None
            of_kind = on_dataset[on_dataset.kind == kind]
            students = [""] if kind == "zero_shot" else students_of(on_dataset)
            teachers = [""] if kind == "baseline" else teachers_of(of_kind)
            for student, teacher in [(s, t) for s in students for t in teachers]:
                group = of_kind[((of_kind.student == student) | (kind == "zero_shot"))
                                & ((of_kind.teacher == teacher) | (kind == "baseline"))]
                row = {"dataset": DATASET_NAMES.get(dataset, dataset), "method": label,
                       "student": student or "-", "teacher": teacher or "-", "seeds": len(group)}
                for i, metric in enumerate(metrics):
                    row[metric] = mean_std(group[metric]) if len(group) else "not run"
                    row[f"paper {metric}"] = f"{reference[i]:.3f}" if reference and i < len(reference) else "-"
                for metric in metrics[:2]:
                    row[f"Δ {metric} vs model_0 [95% CI]"] = paired_delta(group, metric) if kind == "pgkd" else "-"
                rows.append(row)
    frame = pd.DataFrame(rows)
    return _header(title, selected[selected.dataset.isin(list(datasets))]) + frame.to_markdown(index=False) + "\n", frame


def table4(runs: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Accuracy of full PGKD and its two ablations per dataset, the paper's beside."""
    # the ablation sweep and single `pgkd` runs (full-length loops), not the Table 2 sweep's runs
    # full PGKD of the Table 2 sweep is the same config as the ablation sweep's "full" jobs
    selected = runs[(runs.kind == "pgkd") & (runs.n_annotated.fillna(1000) == 1000)
                    & (runs.task.isin(["table4", "pgkd"]) | ((runs.task == "table2") & (runs.ablation == "full")))]
    rows = []
    for student, teacher in [(s, t) for s in students_of(selected) for t in teachers_of(selected)]:
        for ablation, label in (("full", "PGKD"), ("no_validation", "w/o Validation"),
                                ("no_hard_negatives", "w/o Hard Negatives")):
            row = {"method": label, "student": student or "-", "teacher": teacher or "-"}
            for dataset in ("ag_news", "yahoo_answers", "huffpost", "amzn_reviews"):
                group = selected[(selected.dataset == dataset) & (selected.ablation == ablation)
                                 & (selected.student == student) & (selected.teacher == teacher)]
                name = DATASET_NAMES[dataset]
                row[name] = mean_std(group.accuracy) if len(group) else "not run"
                row[f"{name} Δ vs model_0"] = paired_delta(group, "accuracy") if len(group) else "-"
                row[f"paper {name}"] = f"{PAPER_TABLE4[(dataset, ablation)]:.3f}"
            rows.append(row)
    frame = pd.DataFrame(rows)
    return _header("Table 4 (accuracy)", selected) + frame.to_markdown(index=False) + "\n", frame


def table6(runs: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Baseline vs +PGKD by annotated sample size."""
    # the sample-size sweep and the 1,000-label runs of Table 2 (not Table 3's datasets)
    selected = runs[runs.kind.isin(["baseline", "pgkd"]) & runs.ablation.isin(["", "full"])
                    & runs.task.isin(["table2", "table6"])]
    rows = []
    for (dataset, n, student), group in selected.groupby(["dataset", "n_annotated", "student"]):
        row = {"dataset": DATASET_NAMES.get(dataset, dataset), "samples": int(n), "student": student or "-"}
        for kind, label in (("baseline", "student"), ("pgkd", "+PGKD")):
            part = group[group.kind == kind]
            for metric in METRICS:
                row[f"{label} {metric}"] = mean_std(part[metric]) if len(part) else "not run"
        row["+PGKD Δ accuracy vs model_0 [95% CI]"] = paired_delta(group[group.kind == "pgkd"], "accuracy")
        reference = PAPER_TABLE6.get((dataset, int(n)))
        row["paper acc student / +PGKD"] = f"{reference[0]:.3f} / {reference[1]:.3f}" if reference else "-"
        rows.append(row)
    frame = pd.DataFrame(rows)
    return _header("Table 6 (training sample size)", selected) + frame.to_markdown(index=False) + "\n", frame


def ab_table(runs: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Each loop option (task ``ab``) against PGKD with the defaults on the same dataset, seed,
    student and teacher: per-seed paired test change with a 95 % interval."""
    pgkd = runs[(runs.kind == "pgkd") & (runs.ablation == "full") & (runs.n_annotated.fillna(1000) == 1000)]
    control = pgkd[(pgkd.variant == "defaults") & (pgkd.task == "table2")]
    rows = []
    for (dataset, variant, student, teacher), group in pgkd[pgkd.task == "ab"].groupby(
            ["dataset", "variant", "student", "teacher"]):
        paired = group.merge(control[(control.dataset == dataset) & (control.student == student)
                                     & (control.teacher == teacher)], on="seed", suffixes=("", "_control"))
        row = {"dataset": DATASET_NAMES.get(dataset, dataset), "option": variant, "student": student,
               "teacher": teacher, "seeds": len(paired)}
        for metric in ("accuracy", "macro_f1"):
            row[f"{metric} (option)"] = mean_std(paired[metric]) if len(paired) else "-"
            row[f"{metric} (defaults)"] = mean_std(paired[f"{metric}_control"]) if len(paired) else "-"
            row[f"Δ {metric} [95% CI]"] = mean_with_interval(paired[metric] - paired[f"{metric}_control"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    selected = pgkd[pgkd.task == "ab"]
    body = frame.to_markdown(index=False) if len(frame) else "(no A/B runs)"
    return _header("A/B of the loop options (test, paired per seed vs PGKD with the defaults)", selected) + body + "\n", frame


def figure3(runs: pd.DataFrame, path: str | Path) -> Path:
    """Accuracy and macro-F1 vs annotated sample size, student vs +PGKD (paper Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    selected = runs[runs.kind.isin(["baseline", "pgkd"]) & runs.ablation.isin(["", "full"])
                    & runs.task.isin(["table2", "table6"])]
    datasets = sorted(selected.dataset.unique()) or ["(no runs)"]
    fig, axes = plt.subplots(2, len(datasets), figsize=(4 * len(datasets), 6), squeeze=False)
    for column, dataset in enumerate(datasets):
        for row, metric in enumerate(("accuracy", "macro_f1")):
            ax = axes[row][column]
            students = students_of(selected[selected.dataset == dataset])
            for student in students:
                for kind, label, style in (("baseline", "student", "o--"), ("pgkd", "student + PGKD", "s-")):
                    part = selected[(selected.dataset == dataset) & (selected.kind == kind)
                                    & (selected.student == student)]
                    stats = part.groupby("n_annotated")[metric].agg(["mean", "std"]).reset_index()
                    if len(stats):
                        ax.errorbar(stats.n_annotated, stats["mean"], yerr=stats["std"].fillna(0), fmt=style,
                                    label=f"{student}: {label}" if len(students) > 1 else label, capsize=3)
            ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}: {metric}")
            ax.set_xlabel("annotated samples")
            ax.grid(alpha=0.3)
            if len(selected.n_annotated.unique()) > 2:
                ax.set_xscale("log")
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_tables(runs_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Regenerate table2/3/4/6 (.md + .csv) and fig3.png from the committed raw runs."""
    runs, out = load_runs(runs_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if not runs.empty:  # the inference benchmark's short fine-tunes are not protocol runs
        runs = runs[runs.task != "bench"]
    if runs.empty:
        return written
    makers = {
        "table2": lambda r: table2(r),
        "table3": lambda r: table2(r, ("imdb", "inshorts"), ("weighted_f1",), PAPER_TABLE3, "Table 3 (weighted F1)"),
        "table4": table4,
        "table6": table6,
        "ab_options": ab_table,
    }
    for name, make in makers.items():
        markdown, frame = make(runs)
        (out / f"{name}.md").write_text(markdown)
        frame.to_csv(out / f"{name}.csv", index=False)
        written += [out / f"{name}.md", out / f"{name}.csv"]
    written.append(figure3(runs, out / "fig3.png"))
    return written
