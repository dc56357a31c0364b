"""Paper experiments: every experiment config composes and runs tiny, a real multirun sweep
skips unavailable datasets and resumes, the zero-shot baseline parses bad answers, and the
tables aggregate known numbers correctly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pgkd.experiment import run
from pgkd.parsing import LabelMap
from pgkd.results import load_runs, table2, table4, write_tables
from pgkd.zero_shot import parse_answer
from tests.conftest import ROOT

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != "zero_shot"])
def test_every_experiment_runs_tiny(compose, tmp_path, experiment):
    cfg = compose(f"experiment={experiment}", "debug=fdr", "pgkd.num_kd_steps=1")
    assert cfg.task_name == "debug"  # debug overrides come last
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "finished" and 0 <= metrics["test"]["accuracy"] <= 1


def test_multirun_sweep_skips_missing_datasets_and_resumes(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "run.py"), "-m", "experiment=table2", "debug=fdr",
               "pgkd.num_kd_steps=1", "dataset=ag_news,yahoo_answers",
               "seed=0", f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
               "dataset.hub_id=null"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    runs = {p.parent.relative_to(tmp_path / "multirun").as_posix(): json.loads(p.read_text())
            for p in (tmp_path / "multirun").rglob("metrics.json")}
    assert len(runs) == 4
    statuses = {name.split("/")[1] + ":" + run["method"]: run["status"] for name, run in runs.items()}
    assert statuses == {"ag_news:baseline": "finished", "ag_news:pgkd-scripted-full": "finished",
                        "yahoo_answers:baseline": "skipped", "yahoo_answers:pgkd-scripted-full": "skipped"}
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and (second.stdout + second.stderr).count("already finished") == 2


def test_zero_shot_counts_unusable_answers_as_wrong(compose, tmp_path):
    from pgkd.zero_shot import run as run_zero_shot

    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("zero_shot", overrides=["teacher=scripted", "teacher.backend.zero_shot_accuracy=0.6",
                                                    "limit=120", f"paths.cache_dir={tmp_path}"])
    metrics = run_zero_shot(cfg, tmp_path / "zs")
    assert metrics["n_evaluated"] == 120 and metrics["invalid_rate"] == 0
    assert 0.45 < metrics["test"]["accuracy"] < 0.75
    lines = (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 120
    # resuming reads the answers back instead of asking again
    (tmp_path / "zs" / "metrics.json").unlink()
    again = run_zero_shot(cfg, tmp_path / "zs")
    assert again["test"]["accuracy"] == metrics["test"]["accuracy"] and again["teacher"]["calls"] == 120


@pytest.mark.parametrize("reply, expected", [
    ('{"class_label": 1, "class_names": "Sports"}', "Sports"),
    ('```json\n{"class_label": 3, "class_names": "sci/tech"}\n```', "Sci/Tech"),
    ('The answer is {"class_names": "Business"}.', "Business"),
    ('{"class_label": 0}', "World"),
    ("World", "World"),
    ('{"class_names": "Cooking"}', None),
    ("I think it's about sports and business.", None),
    ("", None),
])
def test_zero_shot_answer_parsing(reply, expected):
    assert parse_answer(reply, LabelMap(["World", "Sports", "Business", "Sci/Tech"])) == expected


def synthetic_runs(folder, rng=np.random.default_rng(0)):
    """Run files with known accuracies: baseline 0.80/0.82/0.84, PGKD 0.85/0.87/0.89."""
    folder.mkdir(parents=True)
    for seed, (base, kd) in enumerate([(0.80, 0.85), (0.82, 0.87), (0.84, 0.89)]):
        for method, value in (("baseline", base), ("pgkd-scripted-full", kd), ("pgkd-scripted-no_validation", kd - 0.02)):
            run = {"run_name": f"table2/ag_news/tiny/{method}/n1000/seed{seed}", "dataset": "ag_news",
                   "method": method, "seed": seed, "n_annotated": 1000, "student": "tiny", "status": "finished",
                   "teacher": {"model": "scripted-v1"}, "kd_steps": 2, "commit": "abcdef0123456789", "dirty": seed == 2,
                   "test": {"n": 500, "accuracy": value, "macro_f1": value - 0.01, "weighted_f1": value - 0.02},
                   "model_0_test": {"accuracy": base - 0.01 * seed, "macro_f1": base, "weighted_f1": base}}
            (folder / f"{method}-{seed}.json").write_text(json.dumps(run))


def test_tables_aggregate_known_means_and_stds(tmp_path):
    synthetic_runs(tmp_path / "runs")
    runs = load_runs(tmp_path / "runs")
    markdown, frame = table2(runs)
    ag = frame[frame.dataset == "AG-news"].set_index("method")
    assert ag.loc["student", "accuracy"] == "0.820 ± 0.020"
    assert ag.loc["student + PGKD", "macro_f1"] == "0.860 ± 0.020"
    assert ag.loc["student", "paper accuracy"] == "0.884" and ag.loc["teacher zero-shot", "accuracy"] == "not run"
    # paired per seed against the run's own model_0: deltas 0.05, 0.06, 0.07 -> mean 0.06, t(2) interval
    assert ag.loc["student + PGKD", "Δ accuracy vs model_0 [95% CI]"] == "+0.060 [+0.035, +0.085]"
    assert ag.loc["student", "Δ accuracy vs model_0 [95% CI]"] == "-"
    assert "Student: tiny. Teacher: scripted-v1. KD steps: 2. Test texts per run: 500" in markdown
    assert "Rows made at commit(s): abcdef0 (4 runs), abcdef0+dirty (2 runs)." in markdown
    _, ablations = table4(runs)
    assert ablations.set_index("method").loc["w/o Validation", "AG-news"] == "not run"  # table2 task only
    for path in (tmp_path / "runs").glob("pgkd-scripted-no_validation-*.json"):
        run = json.loads(path.read_text())
        run["run_name"] = run["run_name"].replace("table2/", "table4/", 1)
        path.write_text(json.dumps(run))
    _, ablations = table4(load_runs(tmp_path / "runs"))
    assert ablations.set_index("method").loc["w/o Validation", "AG-news"] == "0.850 ± 0.020"
    written = write_tables(tmp_path / "runs", tmp_path / "out")
    assert {p.name for p in written} >= {"table2.md", "table2.csv", "table4.md", "table6.md", "fig3.png"}
    assert (tmp_path / "out" / "fig3.png").stat().st_size > 10_000
    assert pd.read_csv(tmp_path / "out" / "table2.csv").shape[0] == 12


def test_tables_never_pool_two_students_or_benchmark_runs(tmp_path):
    synthetic_runs(tmp_path / "runs")
    for task, student, accuracy in (("table2", "minilm_l6", 0.91), ("bench", "tiny", 0.10)):
        run = {"run_name": f"{task}/ag_news/{student}/baseline/n1000/seed0", "dataset": "ag_news",
               "method": "baseline", "seed": 0, "n_annotated": 1000, "student": student, "status": "finished",
               "test": {"n": 500, "accuracy": accuracy, "macro_f1": accuracy, "weighted_f1": accuracy}}
        (tmp_path / "runs" / f"{task}-{student}.json").write_text(json.dumps(run))
    write_tables(tmp_path / "runs", tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "table2.csv")
    students = table[(table.dataset == "AG-news") & (table.method == "student")].set_index("student")
    assert students.loc["tiny", "accuracy"] == "0.820 ± 0.020"  # the bench run left out
    assert students.loc["minilm_l6", "accuracy"] == "0.910" and students.loc["minilm_l6", "seeds"] == 1
    sizes = pd.read_csv(tmp_path / "out" / "table6.csv").set_index("student")
    assert sizes.loc["tiny", "student accuracy"] == "0.820 ± 0.020" and sizes.loc["minilm_l6", "student accuracy"] == "0.910"


def test_ab_table_pairs_each_option_with_the_defaults_of_the_same_seed(tmp_path):
    from pgkd.results import ab_table

    folder = tmp_path / "runs"
    folder.mkdir()
    for seed, (default, option) in enumerate([(0.40, 0.42), (0.41, 0.42), (0.39, 0.42)]):
        for task, value, options in (("table2", default, {"report_confusions": 0}),
                                     ("ab", option, {"report_confusions": 5})):
            run = {"run_name": f"{task}/huffpost/tiny/pgkd-scripted-full/n1000/seed{seed}", "dataset": "huffpost",
                   "method": "pgkd-scripted-full", "seed": seed, "n_annotated": 1000, "student": "tiny",
                   "status": "finished", "teacher": {"model": "scripted-v1"}, "options": options,
                   "test": {"n": 100, "accuracy": value, "macro_f1": value, "weighted_f1": value}}
            (folder / f"{task}-{seed}.json").write_text(json.dumps(run))
    _, frame = ab_table(load_runs(folder))
    row = frame.set_index("option").loc["report_confusions=5"]
    assert row["seeds"] == 3 and row["accuracy (defaults)"] == "0.400 ± 0.010"
    assert row["Δ accuracy [95% CI]"] == "+0.020 [-0.005, +0.045]"  # deltas 0.02, 0.01, 0.03
