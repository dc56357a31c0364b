"""Export a run's model for serving (``scripts/export.py``, ``conf/export.yaml``), each export
checked against the PyTorch model on real texts.

- ``format=hf``: a Hugging Face folder (fine-tuned students) that plain
  ``AutoModelForSequenceClassification`` / ``AutoTokenizer`` load; parity is measured that way.
- ``format=onnx``: ``model.onnx`` (token ids + attention mask -> class probabilities; for the
  frozen student the encoder, pooling and head in one graph), the tokenizer and ``labels.json``;
  ``int8=true`` adds ``model.int8.onnx`` (ONNX Runtime dynamic quantization).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgkd.classifier import LABELS_FILE, SPEC_FILE, Classifier
from pgkd.students import FrozenEncoderStudent

log = logging.getLogger(__name__)
MIN_AGREEMENT = 0.99


class ExportError(RuntimeError):
    """An export that cannot be made or that does not reproduce the model."""


@dataclass
class ParityTexts:
    """Texts to compare an export with the PyTorch model on, and their gold labels if known."""

    texts: list[str]
    gold: list[str] | None
    source: str


def parity_texts(run_dir: str | Path, n: int, texts_file: str | None = None, text_column: str = "text",
                 label_column: str | None = "label", seed: int = 0) -> ParityTexts:
    """``n`` seeded texts from ``texts_file``, else from the test split of the run's dataset
    (read from the run's ``config.yaml``)."""
    if texts_file:
        from pgkd.predict import read_texts

        frame, where = read_texts(texts_file, text_column)
        frame = frame.sample(n=min(n, len(frame)), random_state=seed)
        gold = frame[label_column].astype(str).tolist() if label_column and label_column in frame else None
        return ParityTexts(frame[text_column].tolist(), gold, where)
    from omegaconf import OmegaConf

    from pgkd.classifier import model_dir_of
    from pgkd.experiment import load_data

    config = Path(run_dir) / "config.yaml"
    if not config.exists():
        config = model_dir_of(run_dir).parent / "config.yaml"
    if not config.exists():
        raise ExportError(f"{run_dir}: no config.yaml to find the run's test texts; pass texts_file=")
    trained = OmegaConf.load(config)
    trained.dataset.test_limit = None
    data = load_data(trained)
    test = data.test.sample(n=min(n, len(data.test)), random_state=seed)
    return ParityTexts(test.text.tolist(), test.label.tolist(), f"{data.name} test split ({data.source})")


def parity(reference: np.ndarray, other: np.ndarray, labels: list[str], gold: list[str] | None) -> dict:
    """``bench.parity`` (argmax agreement; accuracy of both and its change, in points, when gold
    labels are known) plus the largest probability gap."""
    from pgkd import bench

    result = {"texts": len(reference), "agreement": float((reference.argmax(1) == other.argmax(1)).mean()),
              "max_abs_proba_diff": float(np.abs(reference - other).max()) if len(reference) else 0.0}
    if gold is not None:
        truth = np.array([labels.index(g) if g in labels else -1 for g in gold])
        result.update(bench.parity(reference, other, truth),
                      accuracy_reference=float((reference.argmax(1) == truth).mean()))
    return result


def _copy_description(model: Classifier, out_dir: Path, export_format: str, files: list[str]) -> None:
    spec = {**model.spec, "export": {"format": export_format, "files": files, "source": str(model.path)}}
    (out_dir / SPEC_FILE).write_text(json.dumps(spec, indent=1, default=str))
    shutil.copy2(model.path / LABELS_FILE, out_dir / LABELS_FILE)


def export_hf(model: Classifier, out_dir: Path, texts: ParityTexts) -> dict:
    """Copy the Hugging Face folder and check it with plain transformers."""
    if model.spec["student"]["kind"] != "finetuned":
        raise ExportError(f"format=hf needs a fine-tuned student; {model.path} holds a frozen encoder + linear "
                          "head (its encoder is the unchanged public model): use format=onnx")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    files = [p.name for p in model.path.iterdir() if p.is_file() and p.name not in (SPEC_FILE, LABELS_FILE)]
    for name in files:
        shutil.copy2(model.path / name, out_dir / name)
    _copy_description(model, out_dir, "hf", files)
    reference = model.predict_proba(texts.texts).to_numpy()
    hf = AutoModelForSequenceClassification.from_pretrained(out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    labels = [hf.config.id2label[i] for i in range(hf.config.num_labels)]
    proba = np.zeros_like(reference)
    max_length = int(model.spec["student"]["max_length"])
    with torch.inference_mode():
        for start in range(0, len(texts.texts), 64):
            batch = tokenizer(texts.texts[start:start + 64], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            proba[start:start + 64] = torch.softmax(hf(**batch).logits, -1).numpy()
    result = {"format": "hf", "out_dir": str(out_dir), "labels_match": labels == model.labels,
              "fp32": parity(reference, proba, model.labels, texts.gold)}
    return result


def export_onnx(model: Classifier, out_dir: Path, texts: ParityTexts, int8: bool = False, threads: int = 1) -> dict:
    """Export the token-ids-to-probabilities graph; check fp32 (and int8) with ONNX Runtime."""
    from pgkd import bench

    out_dir.mkdir(parents=True, exist_ok=True)
    student = model.student
    tokenizer, max_length = bench.tokenizer_and_length(student)
    student.module.cpu()
    if isinstance(student, FrozenEncoderStudent):
        student.encoder.model.cpu()
    pipeline = bench.Pipeline(student)
    onnx_path = bench.export_onnx(pipeline, out_dir / "model.onnx", tokenizer)
    tokenizer.save_pretrained(out_dir)
    files = ["model.onnx"]
    batches = bench.encode_batches(tokenizer, texts.texts, max_length, 64, sort_by_length=True)
    reference = model.predict_proba(texts.texts).to_numpy()
    fp32 = bench.onnx_backend(onnx_path, threads)
    result = {"format": "onnx", "out_dir": str(out_dir), "max_length": max_length,
              "fp32": parity(reference, bench.predict_all(fp32, batches, len(texts.texts), len(model.labels)),
                             model.labels, texts.gold)}
    if int8:
        quantized = bench.onnx_backend(onnx_path, threads, int8=True)
        (out_dir / "model-int8.onnx").replace(out_dir / "model.int8.onnx")
        files.append("model.int8.onnx")
        result["int8"] = parity(reference, bench.predict_all(quantized, batches, len(texts.texts), len(model.labels)),
                                model.labels, texts.gold)
    _copy_description(model, out_dir, "onnx", files)
    return result


def export(run_dir: str, format: str, out_dir: str | None = None, int8: bool = False, texts: int = 512,
           texts_file: str | None = None, text_column: str = "text", label_column: str | None = "label",
           threads: int = 1, cache_dir: str | None = None) -> dict:
    """Export the model of ``run_dir`` as ``format`` (hf | onnx) and check its parity; raises
    ExportError when fp32 agreement with PyTorch is below 99 %."""
    from pgkd.classifier import load

    if format not in ("hf", "onnx"):
        raise ExportError(f"format={format!r}: choose hf or onnx")
    model = load(run_dir, device="cpu", cache_dir=cache_dir)
    target = Path(out_dir) if out_dir else model.path.parent / "export" / format
    sample = parity_texts(run_dir, texts, texts_file, text_column, label_column)
    log.info("exporting %s as %s to %s; parity on %d texts from %s", model, format, target, len(sample.texts),
             sample.source)
    result = (export_hf(model, target, sample) if format == "hf"
              else export_onnx(model, target, sample, int8, threads))
    result["parity_texts"] = sample.source
    (target / "parity.json").write_text(json.dumps(result, indent=1))
    if result["fp32"]["agreement"] < MIN_AGREEMENT or not result.get("labels_match", True):
        raise ExportError(f"{target}: the export disagrees with PyTorch: {result['fp32']}")
    return result


def render(result: dict) -> str:
    """The parity report printed by ``scripts/export.py``."""
    lines = [f"exported {result['format']} -> {result['out_dir']} (parity on {result['fp32']['texts']} texts from "
             f"{result['parity_texts']})"]
    for precision in ("fp32", "int8"):
        if precision in result:
            r = result[precision]
            line = (f"  {precision}: agreement with PyTorch {r['agreement']:.4f}, max |Δp| "
                    f"{r['max_abs_proba_diff']:.2e}")
            if "accuracy" in r:
                line += (f", accuracy {r['accuracy']:.4f} vs PyTorch {r['accuracy_reference']:.4f} "
                         f"({r['accuracy_delta_pts']:+.2f} pts)")
            lines.append(line)
    return "\n".join(lines)


__all__ = ["export", "export_hf", "export_onnx", "parity", "parity_texts", "render", "ExportError", "ParityTexts"]
