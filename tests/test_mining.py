"""Mining: the teacher always sees the student's mistakes (auto → out-of-fold when training errors
are too few), within the configured scope, each row once, with its origin; the truthful report."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from pgkd.loop import KDLoop, PGKDConfigError, PGKDSettings, TeacherContext, teacher_step
from pgkd.metrics import classification_metrics, top_confusions
from pgkd.parsing import LabelMap, SplitFirewall
from pgkd.teacher import CostLedger, ScriptedTeacher, TeacherClient
from tests.conftest import ROOT
from tests.test_loop import MemorisingStudent

PROMPT = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "prompt" / "pgkd.yaml"))


class GuessingStudent(MemorisingStudent):
    """Wrong on most rows, even those it was trained on."""

    def predict_proba(self, texts):
        proba = np.full((len(texts), self.num_labels), 0.1 / self.num_labels)
        for row, text in enumerate(texts):
            proba[row, len(text) % self.num_labels] += 0.9
        return proba


class NearestStudent(MemorisingStudent):
    """Memorises; an unseen text gets the label of the memorised text it shares most words with
    (so held-out predictions depend on which rows were in the fold)."""

    def predict_proba(self, texts):
        memory = [(set(t.lower().split()), label) for t, label in self.module.table.items()]
        proba = np.full((len(texts), self.num_labels), 0.1 / self.num_labels)
        for row, text in enumerate(texts):
            words = set(text.lower().split())
            label = self.module.table.get(text)
            if label is None:
                label = max(memory, key=lambda item: len(words & item[0]))[1]
            proba[row, label] += 0.9
        return proba


def loop_for(data, student, tmp_path, **settings) -> KDLoop:
    teacher = TeacherClient(ScriptedTeacher(), CostLedger(tmp_path / "l.jsonl"))
    teacher.backend.bind_dataset(data)
    loop = KDLoop(data, student, teacher, PGKDSettings(oof_folds=3, **settings), PROMPT, tmp_path)
    student.fit(*loop.training_data(), [], [])
    return loop


@pytest.mark.parametrize("student_class, source", [(MemorisingStudent, "oof"), (GuessingStudent, "train")])
def test_auto_mining_falls_back_to_out_of_fold_only_without_enough_training_errors(
        ag_news_small, tmp_path, student_class, source):
    student = student_class(len(ag_news_small.taxonomy))
    proba, used, training_errors = loop_for(ag_news_small, student, tmp_path, mining="auto").history_proba()
    assert (training_errors == 0) == (source == "oof")
    assert used == source and student.fits == (4 if source == "oof" else 1)
    labels = np.array(ag_news_small.ids(ag_news_small.train.label))
    assert (proba.argmax(1) != labels).sum() >= 32


def test_out_of_fold_folds_are_seeded_by_the_kd_step(ag_news_small, tmp_path):
    loop = loop_for(ag_news_small, NearestStudent(len(ag_news_small.taxonomy)), tmp_path, mining="oof")
    first, _, _ = loop.history_proba()
    again, _, _ = loop.history_proba()
    loop.state.step = 5
    other, _, _ = loop.history_proba()
    np.testing.assert_array_equal(first, again)  # a resumed run mines the same rows
    assert not np.array_equal(first, other)


def history_with_teacher_rows(data) -> pd.DataFrame:
    annotated = pd.DataFrame({"text": data.train.text, "label": data.train.label, "step": 0, "origin": "annotated",
                              "teacher_model": "", "prompt_hash": "", "request_index": -1, "parse_status": "",
                              "answers": ""})
    generated = annotated.head(40).assign(text=lambda f: "generated: " + f.text, step=1, origin="teacher")
    return pd.concat([annotated, generated], ignore_index=True)


@pytest.mark.parametrize("scope, origins", [("history", {"annotated", "teacher"}), ("annotated", {"annotated"}),
                                            ("latest", {"teacher"})])
def test_mining_scope_and_origins_reach_the_report(ag_news_small, tmp_path, scope, origins):
    data = ag_news_small
    history = history_with_teacher_rows(data)
    proba = GuessingStudent(len(data.taxonomy)).predict_proba(history.text)
    teacher = TeacherClient(ScriptedTeacher(), CostLedger(tmp_path / "l.jsonl"))
    teacher.backend.bind_dataset(data)
    settings = PGKDSettings(samples_per_step=8, samples_per_call=8, mining_scope=scope, n_correct=40,
                            n_misclassified=40, n_hard_negatives=40)
    ctx = TeacherContext(data, teacher, settings, PROMPT, SplitFirewall(list(data.val.text)), LabelMap(data.taxonomy),
                         0, tmp_path)
    report = classification_metrics([0, 1], [0, 1], data.taxonomy, np.eye(4)[[0, 1]])
    new, counters = teacher_step(2, history, proba, "train", report, ctx)
    assert len(new) == 8 and counters["mining_scope"] == scope
    mined = json.loads((tmp_path / "steps" / "step_02" / "report.json").read_text())["mined"]
    rows = [row for name in ("correct", "misclassified", "hard_negatives") for row in mined[name]]
    assert {row["origin"] for row in rows} == origins
    assert all(row["step"] == (1 if row["origin"] == "teacher" else 0) for row in rows)
    shown = [row["text"] for name in ("misclassified", "hard_negatives") for row in mined[name]]
    assert len(shown) == len(set(shown))  # no row in both mistake sections


def test_latest_scope_is_the_annotated_set_at_step_one(ag_news_small):
    from pgkd.mining import in_scope

    history = history_with_teacher_rows(ag_news_small)
    assert in_scope(history[history.step == 0], "latest").all()
    assert (history[in_scope(history, "latest")].origin == "teacher").all()


def test_confusions_are_counts_of_label_pairs_and_reach_the_prompt(compose, tmp_path):
    assert top_confusions([0, 0, 0, 1, 2, 2], [1, 1, 2, 0, 2, 0], ["a", "b", "c"], 2) == [["a", "b", 2], ["a", "c", 1]]
    from pgkd.experiment import run

    cfg = compose("debug=fdr", "dataset.n_annotated=120", "pgkd.num_kd_steps=1", "pgkd.samples_per_step=8",
                  "pgkd.report_confusions=3")
    run(cfg, tmp_path)
    prompt = (tmp_path / "steps" / "step_01" / "prompt_00.txt").read_text()
    section = prompt.split("most often confuses these classes (true label -> predicted label: count):")[1]
    lines = [line for line in section.strip().split("\n\n")[0].splitlines()]
    assert 1 <= len(lines) <= 3 and all(" -> " in line and line.rsplit(": ", 1)[1].isdigit() for line in lines)


def test_selection_part_of_validation_is_never_reported(compose, tmp_path):
    from pgkd.experiment import run

    cfg = compose("debug=fdr", "dataset.n_annotated=200", "pgkd.num_kd_steps=1", "pgkd.samples_per_step=8",
                  "pgkd.selection_fraction=0.5")
    metrics = run(cfg, tmp_path)
    report = json.loads((tmp_path / "steps" / "step_01" / "report.json").read_text())["validation"]
    reported = sum(m["support"] for m in report["per_class"].values())
    assert reported == 20 and metrics["steps"][0]["report_val_loss"] != metrics["steps"][0]["val_loss"]
    assert metrics["val"]["n"] == 20  # the kept model was chosen on the other half


def test_no_fit_runs_inside_another_fits_hook_and_oof_finishes_with_the_progress_bar(compose, tmp_path, monkeypatch):
    from pgkd.experiment import run
    from pgkd.students.base import Student

    depth, deepest = threading.local(), []
    original = Student.fit

    def fit(self, *args, **kwargs):
        depth.value = getattr(depth, "value", 0) + 1
        deepest.append(depth.value)
        try:
            return original(self, *args, **kwargs)
        finally:
            depth.value -= 1

    monkeypatch.setattr(Student, "fit", fit)
    cfg = compose("debug=fdr", "dataset.n_annotated=120", "pgkd.num_kd_steps=2", "pgkd.samples_per_step=8",
                  "pgkd.mining=oof", "pgkd.oof_folds=2", "trainer.enable_progress_bar=true")
    metrics = run(cfg, tmp_path)
    assert metrics["stopped"] == "max_steps" and [s["mining"] for s in metrics["steps"][1:]] == ["oof", "oof"]
    assert len(deepest) == 3 + 2 * 2 and max(deepest) == 1


def test_ddp_with_pgkd_fails_at_start_with_a_clear_message(compose, tmp_path):
    from pgkd.experiment import run

    with pytest.raises(PGKDConfigError, match="not supported: the teacher step and the early-stop decision"):
        run(compose("debug=fdr", "trainer=ddp"), tmp_path)
    assert not (tmp_path / "pgkd_state.json").exists()


def test_predictions_run_on_the_trainers_device(compose, tmp_path, monkeypatch):
    import functools

    from hydra.utils import instantiate

    from pgkd.students.base import inference_device

    assert inference_device(functools.partial(object, accelerator="cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device(functools.partial(object, accelerator="gpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device(functools.partial(object, accelerator="gpu")) == torch.device("cuda")
    monkeypatch.undo()
    cfg = compose("student=tiny", "student.eval_batch_size=7")
    student = instantiate(cfg.student, num_labels=4, trainer=instantiate(cfg.trainer), workdir=str(tmp_path))
    student.module = student.new_module()
    moved, batches = [], []
    original_to = type(student.module).to
    monkeypatch.setattr(type(student.module), "to", lambda self, device: moved.append(device) or original_to(self, device))
    original_forward = type(student.module).forward
    monkeypatch.setattr(type(student.module), "forward",
                        lambda self, batch: batches.append(len(batch["input_ids"])) or original_forward(self, batch))
    student.predict_proba([f"text number {i}" for i in range(20)])
    assert moved == [student.device] and batches == [7, 7, 6]
