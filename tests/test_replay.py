"""A committed Claude-class run re-creates from its committed transcript at $0."""

from __future__ import annotations

import json

import pytest

from pgkd.experiment import run
from tests.conftest import ROOT

TEACHER = "claude-class-via-teacher-file"
COMMITTED = sorted((ROOT / "results" / "runs").glob(
    f"table2__huffpost__minilm_l6_frozen__pgkd-file-{TEACHER}-full__n1000__seed0-*.json"))


def test_a_committed_run_replays_with_zero_calls_and_identical_metrics(compose, tmp_path):
    assert COMMITTED, "the committed Claude-class HuffPost run (results/runs) is missing"
    reference = json.loads(COMMITTED[0].read_text())
    cfg = compose("task_name=table2", "dataset=huffpost", "seed=0", "teacher=replay",
                  "teacher@teacher.original=file", f"teacher.original.backend.model={TEACHER}",
                  f"teacher.cache_path={tmp_path / 'fresh-cache.sqlite'}")
    result = run(cfg, tmp_path / "replayed")
    assert result["teacher"]["calls"] == result["teacher"]["cache_hits"] == reference["teacher"]["calls"]
    assert result["teacher"]["cost_usd"] == 0.0
    assert [s["accepted"] for s in result["steps"]] == [s["accepted"] for s in reference["steps"]]
    assert [s["val_loss"] for s in result["steps"]] == pytest.approx([s["val_loss"] for s in reference["steps"]],
                                                                      abs=1e-6)
    assert result["best_step"] == reference["best_step"]
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        assert result["test"][key] == pytest.approx(reference["test"][key], abs=1e-9)
        assert result["model_0"]["test"][key] == pytest.approx(reference["model_0_test"][key], abs=1e-9)
