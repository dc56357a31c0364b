"""The W&B dashboard reads only what runs log: a tiny PGKD run and a baseline are logged with
WANDB_MODE=offline, read back from their .wandb files, and every panel's metric and every
grouping / filter key must be there. No network; ``save()`` runs only with a W&B key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgkd import tracking
from pgkd.dashboard import build_report, build_workspace, dashboard_spec, missing_keys, read_offline_run
from pgkd.experiment import run
from tests.conftest import ROOT


def logged_run(out: Path, cache_dir: Path, *overrides: str):
    """A smoke-sized run logged to W&B offline; its .wandb file read back."""
    from hydra import compose, initialize_config_dir

    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_DIR")}
    os.environ.update(WANDB_MODE="offline", WANDB_DIR=str(out / "wandb-dir"))
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["debug=fdr", "logger=wandb", "pgkd.num_kd_steps=2",
                                               f"paths.cache_dir={cache_dir}", f"paths.log_dir={out}", *overrides])
        run(cfg, out / "run")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return read_offline_run(next(out.rglob("run-*.wandb")))


@pytest.fixture(scope="module")
def logged_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("logged")


@pytest.fixture(scope="module")
def logged(logged_dir, cache_dir):
    """A 2-step PGKD run and a baseline, logged offline."""
    return [logged_run(logged_dir / "pgkd", cache_dir), logged_run(logged_dir / "baseline", cache_dir, "pgkd=off")]


def test_every_panel_reads_a_logged_metric_and_groups_by_a_logged_key(logged):
    spec = dashboard_spec(datasets=["ag_news"], students=["tiny"])
    assert missing_keys(spec, logged) == []
    pgkd_run, baseline = logged
    for key in spec.metric_keys() - {tracking.MODEL_0_TEST_ACCURACY, tracking.MODEL_0_TEST_MACRO_F1}:
        if not key.startswith(("kd/", "teacher/")):
            assert baseline.has_metric(key), key  # the baseline's bars are there too
    assert pgkd_run.step_metrics["kd/*"] == tracking.KD_STEP  # kd/* plotted against the KD step
    assert {"pgkd.run_tag", "dataset.name", "student.name", "dataset_method"} <= pgkd_run.config_keys
    assert {"ag_news", "tiny"} <= set(pgkd_run.tags) and baseline.job_type == "baseline"
    assert {panel["kind"] for panel in spec.describe()} == {"line", "bar", "table"}


def test_a_renamed_logged_metric_is_caught(tmp_path, monkeypatch, cache_dir):
    import pgkd.loop

    renamed = lambda record: {k.replace("val_accuracy", "val_acc"): v  # noqa: E731
                              for k, v in tracking.kd_metrics(record).items()}
    monkeypatch.setattr(pgkd.loop, "kd_metrics", renamed)
    logged = logged_run(tmp_path, cache_dir)
    assert logged.has_metric("kd/val_acc") and not logged.has_metric(tracking.KD_VAL_ACCURACY)
    assert missing_keys(dashboard_spec(), [logged]) == ["metric 'kd/val_accuracy': in no run's history"]


def test_workspace_and_report_build_offline_with_the_specs_keys(logged):
    spec = dashboard_spec(datasets=["ag_news", "huffpost"], students=["tiny"], group="table2/ag_news")
    view = build_workspace(spec, "an-entity", "pgkd")._to_model().model_dump_json()
    for key in spec.metric_keys():
        assert key in view, key
    assert "pgkd.value.run_tag" in view and "dataset_method.value" in view  # W&B's nested config paths
    report = build_report(spec, "an-entity", "pgkd")
    titles = [getattr(block, "text", None) for block in report.blocks]
    assert "ag_news: test by method" in str(titles) and "huffpost: test by method" in str(titles)


def test_script_prints_the_spec_and_refuses_keys_no_run_logged(logged, logged_dir, tmp_path):
    script = [sys.executable, str(ROOT / "scripts" / "wandb_dashboard.py"), f"paths.log_dir={tmp_path}",
              f"check_runs=[{logged_dir}/**/run-*.wandb]"]
    out = subprocess.run([*script, "datasets=[ag_news]"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "kd/val_accuracy (x: kd/step)" in out.stdout
    assert "checked against 2 local run(s): every key is logged" in out.stdout
    bad = subprocess.run([*script, "datasets=[imdb]"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "tag 'imdb' (a filter): on no run" in bad.stderr


@pytest.mark.skipif(not os.environ.get("WANDB_API_KEY") or not os.environ.get("PGKD_WANDB_ENTITY"),
                    reason="saving a dashboard needs WANDB_API_KEY and PGKD_WANDB_ENTITY")
def test_save_creates_the_workspace_and_report():
    spec = dashboard_spec()
    entity = os.environ["PGKD_WANDB_ENTITY"]
    workspace, report = build_workspace(spec, entity, "pgkd-dashboard-test"), build_report(spec, entity, "pgkd-dashboard-test")
    workspace.save()
    report.save()
    assert workspace.url and report.url
