"""The PGKD loop: it really improves the student, stops by patience, keeps validation and test
text out of every prompt, ablates exactly its section, resumes after a kill, honours budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from pgkd.experiment import build_student, run
from pgkd.loop import PGKDSettings, run_pgkd
from pgkd.prompt import build_pgkd_messages
from pgkd.teacher import CostLedger, ScriptedTeacher, TeacherClient

TINY = ("student=tiny", "teacher=scripted", "trainer.max_epochs=6", "student.lr=3e-3", "dataset.test_limit=300")


def prompts_of(run_dir: Path) -> list[str]:
    return [p.read_text() for p in sorted(run_dir.glob("steps/*/prompt_*.txt"))]


@pytest.fixture(scope="module")
def behavioural_run(tmp_path_factory, cache_dir):
    """One real PGKD run: tiny student, 300 labels, a scripted teacher that writes correct
    samples for the weakest classes (64 a step, 3 steps)."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import ROOT

    out = tmp_path_factory.mktemp("pgkd")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, "dataset.n_annotated=300", "pgkd.num_kd_steps=3",
                                           "pgkd.samples_per_step=64", f"paths.cache_dir={cache_dir}",
                                           "trainer.enable_progress_bar=false"])
    return cfg, out, run(cfg, out)


def test_pgkd_beats_model_0_on_validation(behavioural_run):
    _, out, metrics = behavioural_run
    steps = metrics["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3] and metrics["stopped"] == "max_steps"
    assert metrics["best_step"] > 0
    assert metrics["val"]["accuracy"] > metrics["model_0"]["val"]["accuracy"]
    assert all(s["accepted"] == 64 for s in steps[1:])
    assert metrics["samples"] == {"annotated": 240, "generated": 192}
    assert steps[-1]["history_size"] == 240 + 192


def test_metrics_json_holds_per_step_records_and_both_test_results(behavioural_run):
    _, out, metrics = behavioural_run
    saved = json.loads((out / "metrics.json").read_text())
    step = saved["steps"][1]
    assert {"step", "val_loss", "val_accuracy", "val_macro_f1", "accepted", "rejected", "input_tokens",
            "output_tokens", "cost_usd", "per_class_f1", "wall_s", "mining"} <= set(step)
    assert {"accuracy", "macro_f1", "weighted_f1"} <= set(saved["model_0"]["test"]) <= set(saved["test"]) | {"n"}
    n_prompts = len(prompts_of(out))
    assert n_prompts >= 6  # 64 samples a step asked 32 at a time (teacher.samples_per_call)
    assert saved["teacher"]["calls"] == n_prompts == sum(s["calls"] for s in saved["steps"])
    assert saved["best_step"] == metrics["best_step"]
    # a step's time covers generating its own samples and fitting on them (step 0 has no teacher)
    assert saved["steps"][0]["teacher_s"] == 0.0 and all(s["teacher_s"] > 0 for s in saved["steps"][1:])
    for s in saved["steps"]:
        assert s["wall_s"] >= s["teacher_s"] + s["fit"]["wall_s"]


def test_best_model_is_restored_for_testing(behavioural_run, tmp_path):
    cfg, out, metrics = behavioural_run
    from hydra.utils import instantiate

    data = instantiate(cfg.dataset)
    student = build_student(cfg, len(data.taxonomy), tmp_path)
    student.load(out / "best_model.pt")
    again = student.evaluate(data.test.text, data.ids(data.test.label), data.taxonomy)
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert again["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    best_val = min(s["val_loss"] for s in metrics["steps"])
    assert metrics["steps"][metrics["best_step"]]["val_loss"] == best_val


def test_no_prompt_contains_validation_or_test_text(behavioural_run):
    cfg, out, _ = behavioural_run
    from hydra.utils import instantiate

    data = instantiate(cfg.dataset)
    prompts = prompts_of(out)
    assert prompts
    protected = [t[:60] for t in list(data.val.text) + list(data.test.text)]
    for prompt in prompts:
        assert not [t for t in protected if t in prompt]
    history = pd.read_csv(out / "history.csv", keep_default_na=False)
    assert not set(history.text) & set(data.val.text) | set(history.text) & set(data.test.text)
    assert set(history.columns) >= {"step", "teacher_model", "prompt_hash", "request_index", "parse_status"}


def test_firewall_keeps_a_leaked_train_text_out_of_prompts(compose, tmp_path):
    """A train row that duplicates a test text (real datasets have such rows) must not be quoted."""
    cfg = compose(*TINY, "dataset.n_annotated=120", "pgkd.num_kd_steps=1", "pgkd.samples_per_step=8",
                  "trainer.max_epochs=1")
    from hydra.utils import instantiate

    data = instantiate(cfg.dataset)
    leaked = data.test.text.iloc[0]
    data.train.loc[:, "text"] = [leaked if i % 2 == 0 else t for i, t in enumerate(data.train.text)]
    student = build_student(cfg, len(data.taxonomy), tmp_path)
    teacher = TeacherClient(ScriptedTeacher(), CostLedger(tmp_path / "l.jsonl"))
    teacher.backend.bind_dataset(data)
    settings = PGKDSettings(num_kd_steps=1, samples_per_step=8, samples_per_call=8)
    run_pgkd(data, student, teacher, settings, OmegaConf.to_container(cfg.prompt), tmp_path)
    prompt = "\n".join(prompts_of(tmp_path))
    assert prompt and leaked[:60] not in prompt


def test_loop_stops_by_patience_when_the_teacher_stops_helping(compose, tmp_path):
    cfg = compose(*TINY, "dataset.n_annotated=300", "pgkd.num_kd_steps=8", "pgkd.patience=1",
                  "pgkd.samples_per_step=96", "teacher.backend.label_noise=1.0")
    metrics = run(cfg, tmp_path)
    assert metrics["stopped"] == "patience"
    assert len(metrics["steps"]) < 9
    best = metrics["best_step"]
    after_best = [s for s in metrics["steps"] if s["step"] > best]
    assert len(after_best) == 2 and all(s["val_loss"] >= metrics["steps"][best]["val_loss"] for s in after_best)
    if best == 0:
        assert metrics["test"] == metrics["model_0"]["test"]


@pytest.mark.parametrize("ablation, gone", [("no_validation", "validation_report"),
                                            ("no_hard_negatives", "hard_negatives")])
def test_each_ablation_removes_exactly_its_section(compose, ag_news_small, ablation, gone):
    full_cfg, ablated_cfg = compose("ablation=full"), compose(f"ablation={ablation}")
    data = ag_news_small
    frame = data.train.head(3).assign(predicted="World")
    report = {"accuracy": 0.5, "macro_f1": 0.4,
              "per_class": {c: {"precision": .5, "recall": .5, "f1": .5, "support": 3} for c in data.taxonomy}}

    def sections(cfg):
        return build_pgkd_messages(
            OmegaConf.to_container(cfg.prompt), taxonomy=data.taxonomy, fewshot=frame, n_samples=8,
            report=report if cfg.pgkd.use_validation_report else None, correct=frame, misclassified=frame,
            hard_negatives=frame if cfg.pgkd.use_hard_negatives else None)

    (full_messages, full), (ablated_messages, ablated) = sections(full_cfg), sections(ablated_cfg)
    assert set(full) - set(ablated) == {gone} and set(ablated) < set(full)
    marker = {"validation_report": "classification report", "hard_negatives": "high confidence"}[gone]
    assert marker in full_messages[-1].content and marker not in ablated_messages[-1].content


def test_kill_and_resume_equals_an_uninterrupted_run(compose, tmp_path):
    overrides = (*TINY, "dataset.n_annotated=160", "pgkd.num_kd_steps=3", "pgkd.samples_per_step=16",
                 "trainer.max_epochs=2")
    straight = run(compose(*overrides), tmp_path / "straight")

    class Killed(RuntimeError):
        pass

    calls = {"n": 0}
    original = ScriptedTeacher.complete

    def dies_in_step_2(self, messages, params):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed("process killed during the teacher call of KD step 2")
        return original(self, messages, params)

    ScriptedTeacher.complete = dies_in_step_2
    try:
        with pytest.raises(Killed):
            run(compose(*overrides), tmp_path / "resumed")
    finally:
        ScriptedTeacher.complete = original
    state = json.loads((tmp_path / "resumed" / "pgkd_state.json").read_text())
    assert state["step"] == 1 and len(state["steps"]) == 1  # step 1's samples were kept
    resumed = run(compose(*overrides), tmp_path / "resumed")
    ledger = [json.loads(l) for l in (tmp_path / "resumed" / "teacher_ledger.jsonl").read_text().splitlines()]
    assert [e["purpose"] for e in ledger if e["status"] == "ok"] == ["pgkd_step_1", "pgkd_step_2", "pgkd_step_3"]
    a = pd.read_csv(tmp_path / "straight" / "history.csv", keep_default_na=False)
    b = pd.read_csv(tmp_path / "resumed" / "history.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(a, b)
    assert [s["val_loss"] for s in resumed["steps"]] == pytest.approx([s["val_loss"] for s in straight["steps"]])
    assert resumed["test"]["accuracy"] == straight["test"]["accuracy"]
    assert resumed["best_step"] == straight["best_step"]


def test_resume_refuses_a_run_dir_with_another_config(compose, tmp_path):
    overrides = (*TINY, "dataset.n_annotated=120", "pgkd.num_kd_steps=1", "pgkd.samples_per_step=8",
                 "trainer.max_epochs=1")
    run(compose(*overrides), tmp_path)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(RuntimeError, match="holds a PGKD run with another config"):
        run(compose(*overrides, "pgkd.n_fewshot=4"), tmp_path)


def test_budget_stops_the_run_cleanly_with_state_saved(compose, tmp_path):
    cfg_overrides = (*TINY, "dataset.n_annotated=120", "pgkd.num_kd_steps=5", "pgkd.samples_per_step=8",
                     "trainer.max_epochs=1", "teacher.budget_usd=0.1", "pgkd.max_tokens=1000",
                     "teacher.prices.input_per_mtok=10", "teacher.prices.output_per_mtok=20")
    cfg = compose(*cfg_overrides)
    metrics = run(cfg, tmp_path)
    assert metrics["stopped"] == "budget" and metrics["status"] == "finished"
    ledger = CostLedger(tmp_path / "teacher_ledger.jsonl")
    assert 0 < ledger.spent() <= 0.1 and len(metrics["steps"]) < 6
    assert metrics["teacher"]["cost_usd"] == pytest.approx(ledger.spent())
    assert sum(s["cost_usd"] for s in metrics["steps"]) == pytest.approx(ledger.spent())
    # a larger budget lets the same command go on from where it stopped
    more = run(compose(*[o for o in cfg_overrides if "budget" not in o], "teacher.budget_usd=10"), tmp_path)
    assert more["stopped"] == "max_steps" and len(more["steps"]) == 6
    assert [s["step"] for s in more["steps"][:len(metrics["steps"])]] == [s["step"] for s in metrics["steps"]]


def test_oof_mining_uses_held_out_predictions(compose, tmp_path):
    cfg = compose(*TINY, "dataset.n_annotated=120", "pgkd.num_kd_steps=1", "pgkd.samples_per_step=8",
                  "trainer.max_epochs=1", "pgkd.mining=oof", "pgkd.oof_folds=3")
    metrics = run(cfg, tmp_path)
    assert metrics["steps"][1]["mining"] == "oof"
    report = json.loads((tmp_path / "steps" / "step_01" / "report.json").read_text())
    assert report["counters"]["mining"] == "oof" and report["mined"]["misclassified"]


def test_report_can_list_only_the_weakest_classes():
    from pgkd.prompt import validation_report

    per_class = {f"c{i}": {"precision": 1.0, "recall": 1.0, "f1": i / 10, "support": 2} for i in range(10)}
    per_class["c9"]["support"] = 0
    report = validation_report({"accuracy": 0.5, "macro_f1": 0.4, "per_class": per_class}, max_classes=3)
    rows = [line.split(" | ")[0] for line in report.splitlines() if line.startswith("c")]
    assert rows == ["c0", "c1", "c2"] and "lowest F1 of 10" in report
    assert len(validation_report({"accuracy": 0.5, "macro_f1": 0.4, "per_class": per_class}).splitlines()) == 13


@pytest.mark.parametrize("warm_start, initialisations", [(True, 1), (False, 3)])
def test_warm_start_continues_from_the_previous_step(compose, tmp_path, warm_start, initialisations):
    cfg = compose(*TINY, "dataset.n_annotated=120", "trainer.max_epochs=1", f"student.warm_start={warm_start}")
    from hydra.utils import instantiate

    data = instantiate(cfg.dataset)
    student = build_student(cfg, len(data.taxonomy), tmp_path)
    created = []
    original = student.new_module
    student.new_module = lambda: created.append(1) or original()
    teacher = TeacherClient(ScriptedTeacher(), CostLedger(tmp_path / "l.jsonl"))
    teacher.backend.bind_dataset(data)
    metrics = run_pgkd(data, student, teacher, PGKDSettings(num_kd_steps=2, samples_per_step=8, samples_per_call=8),
                       OmegaConf.to_container(cfg.prompt), tmp_path)
    assert len(metrics["steps"]) == 3 and len(created) == initialisations
