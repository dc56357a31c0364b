"""Classify new texts with a trained run's model (``scripts/predict.py``, ``conf/predict.yaml``).

Input: a CSV / JSONL / Parquet file (``text_column`` holds the texts), a ``.txt`` file or ``-``
(standard input) with one text per line. Output: the input's columns plus ``predicted`` and the
top-k ``label_j`` / ``proba_j``, as CSV or JSONL (by suffix; ``-`` = CSV on standard output).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

from pgkd.data import DataError, read_frame

log = logging.getLogger(__name__)
LINE_SUFFIXES = (".txt",)


def read_texts(source: str, text_column: str = "text", encoding: str = "utf-8") -> tuple[pd.DataFrame, str]:
    """(rows, where) with a ``text_column`` of non-empty strings; a DataError names the file, the
    column and the row (its line in the file) of the first bad value."""
    if source == "-" or Path(source).suffix.lower() in LINE_SUFFIXES:
        where = "<stdin>" if source == "-" else source
        if source != "-" and not Path(source).exists():
            raise DataError(f"{source}: file not found")
        raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding=encoding)
        lines = raw.splitlines()
        frame = pd.DataFrame({text_column: lines})
        first_line = 1
    else:
        where, frame = source, read_frame(source, encoding, "encoding")
        first_line = 2 if Path(source).suffix.lower() in (".csv", ".gz") else 1  # a CSV's header is line 1
        if text_column not in frame.columns:
            raise DataError(f"{source}: column {text_column!r} not found (columns: {list(frame.columns)}); "
                            "set text_column=")
    if frame.empty:
        raise DataError(f"{where}: no texts")
    texts = frame[text_column]
    bad = texts.isna() | ~texts.map(lambda t: isinstance(t, str)) | (texts.astype(str).str.strip() == "")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        value = texts.iloc[row]
        raise DataError(f"{where}: column {text_column!r}, row {row} (line {row + first_line}): "
                        f"{'empty' if isinstance(value, str) else type(value).__name__} text {value!r}")
    return frame.reset_index(drop=True), where


def write_predictions(frame: pd.DataFrame, output: str) -> None:
    """CSV or JSONL by suffix; ``-``: CSV on standard output."""
    if output == "-":
        frame.to_csv(sys.stdout, index=False)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    if path.suffix.lower() in (".jsonl", ".json"):
        frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)


def predict(run_dir: str, input: str, output: str = "-", text_column: str = "text",
            label_column: str | None = None, top_k: int = 3, batch_size: int = 128, device: str | None = None,
            cache_dir: str | None = None, encoding: str = "utf-8", progress: bool | None = None) -> dict:
    """Classify every text of ``input`` with the model of ``run_dir``; returns a summary
    (rows, and accuracy when ``label_column`` names the gold labels)."""
    from pgkd.classifier import load

    frame, where = read_texts(input, text_column, encoding)
    if label_column and label_column not in frame.columns:
        raise DataError(f"{where}: label_column {label_column!r} not found (columns: {list(frame.columns)})")
    model = load(run_dir, device=device, cache_dir=cache_dir, batch_size=batch_size)
    log.info("%s: %d texts from %s", model, len(frame), where)
    ranked = model.top_k(frame[text_column].tolist(), k=top_k, progress=progress)
    out = pd.concat([frame, ranked.set_index(frame.index)], axis=1)
    write_predictions(out, output)
    summary = {"rows": len(out), "input": where, "output": output, "model_dir": str(model.path)}
    if label_column:
        gold = frame[label_column].astype(str).str.strip()
        unknown = sorted(set(gold) - set(model.labels))
        if unknown:
            log.warning("%d gold labels are not labels of the model (counted as errors): %s", len(unknown), unknown[:10])
        summary["accuracy"] = float((gold == out["predicted"]).mean())
        log.info("accuracy against %r: %.4f (%d rows)", label_column, summary["accuracy"], len(out))
    return summary
