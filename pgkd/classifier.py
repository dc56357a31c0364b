"""A trained student as a self-describing folder, and the ``Classifier`` that serves it.

Every finished run writes ``<run_dir>/model/``::

    pgkd_model.json    format version, student spec (kind, encoder, pooling, max length),
                       labels, package version + commit, the run it came from
    labels.json        {"0": "World", "1": "Sports", ...}: id -> name, the training order
    fine-tuned:        a Hugging Face ``save_pretrained`` folder (config.json with id2label /
                       label2id, model.safetensors, tokenizer files)
    frozen:            head.safetensors (the linear head); the encoder is referenced by name

``pgkd.load(run_dir_or_model_dir)`` returns a ``Classifier`` with ``predict`` / ``predict_proba``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from pgkd import __version__
from pgkd.students import FineTunedStudent, FrozenEncoderStudent, Student

MODEL_DIR = "model"
SPEC_FILE = "pgkd_model.json"
LABELS_FILE = "labels.json"
FORMAT_VERSION = 1
STUDENT_KINDS: dict[str, type[Student]] = {"finetuned": FineTunedStudent, "frozen": FrozenEncoderStudent}


class ModelFormatError(ValueError):
    """A model folder that cannot be loaded; the message names the file and the field."""


def save_classifier(student: Student, model_dir: str | Path, labels: Sequence[str], run: dict | None = None) -> Path:
    """Write ``student`` (holding the weights to ship) as a model folder; returns the folder."""
    from pgkd.identity import git_state

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    labels = [str(label) for label in labels]
    spec = student.save_pretrained(model_dir, labels)
    (model_dir / LABELS_FILE).write_text(json.dumps({str(i): label for i, label in enumerate(labels)}, indent=1))
    (model_dir / SPEC_FILE).write_text(json.dumps({
        "format": "pgkd-model", "format_version": FORMAT_VERSION, "student": spec, "labels": labels,
        "pgkd_version": __version__, **git_state(), "run": run or {}}, indent=1, default=str))
    return model_dir


def model_dir_of(path: str | Path) -> Path:
    """``path`` itself when it holds a model, else ``path/model`` (a run dir)."""
    path = Path(path)
    for candidate in (path, path / MODEL_DIR):
        if (candidate / SPEC_FILE).exists():
            return candidate
    if (path / "metrics.json").exists():
        raise FileNotFoundError(f"{path}: a run dir without {MODEL_DIR}/{SPEC_FILE} (made before models were "
                                "saved with the run, or it did not finish); re-run it with force=true")
    raise FileNotFoundError(f"{path}: no {SPEC_FILE} here or in {path / MODEL_DIR}")


def read_spec(model_dir: Path) -> dict:
    """The model folder's description, checked: labels.json agrees with pgkd_model.json."""
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    if spec.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFormatError(f"{model_dir / SPEC_FILE}: format_version {spec['format_version']} is newer than "
                               f"this pgkd ({__version__}) reads ({FORMAT_VERSION}); upgrade pgkd")
    kind = spec.get("student", {}).get("kind")
    if kind not in STUDENT_KINDS:
        raise ModelFormatError(f"{model_dir / SPEC_FILE}: student.kind={kind!r}; expected one of {sorted(STUDENT_KINDS)}")
    id_to_label = json.loads((model_dir / LABELS_FILE).read_text())
    labels = [id_to_label[str(i)] for i in range(len(id_to_label))] if all(
        str(i) in id_to_label for i in range(len(id_to_label))) else None
    if labels != spec.get("labels"):
        raise ModelFormatError(f"{model_dir / LABELS_FILE} and {model_dir / SPEC_FILE} 'labels' disagree; "
                               "the label order decides what every output column means")
    if kind == "finetuned":
        config = json.loads((model_dir / "config.json").read_text())
        saved = [config.get("id2label", {}).get(str(i)) for i in range(len(labels))]
        if saved != labels:
            raise ModelFormatError(f"{model_dir / 'config.json'}: id2label {saved[:5]}... differs from "
                                   f"{LABELS_FILE} {labels[:5]}...")
    return spec


class Classifier:
    """A trained PGKD student: texts in, labels (or a probability per label) out.

    ``predict_proba`` returns a DataFrame whose columns are the labels in training order; texts
    go through the model in batches, on the GPU when there is one (``device``).
    """

    def __init__(self, student: Student, labels: Sequence[str], spec: dict | None = None,
                 path: Path | None = None):
        self.student, self.labels = student, list(labels)
        self.spec, self.path = spec or {}, path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, cache_dir: str | Path | None = None,
             batch_size: int = 128) -> "Classifier":
        """Load a model folder or a run dir's ``model/``. ``device``: default CUDA when present.
        ``cache_dir``: where a frozen student caches embeddings (the run's cache reuses the
        embeddings of the texts it has seen). ``batch_size``: texts per forward pass of a
        fine-tuned student."""
        import torch

        model_dir = model_dir_of(path)
        spec = read_spec(model_dir)
        kind = STUDENT_KINDS[spec["student"]["kind"]]
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        student = kind.from_pretrained(model_dir, spec["student"], spec["labels"], cache_dir, device)
        student.eval_batch_size = batch_size
        return cls(student, spec["labels"], spec, model_dir)

    def save(self, model_dir: str | Path) -> Path:
        """Write this classifier as a model folder (``Classifier.load`` reads it back)."""
        return save_classifier(self.student, model_dir, self.labels, self.spec.get("run"))

    def predict_proba(self, texts: Iterable[str], chunk_size: int = 1024, progress: bool | None = False) -> pd.DataFrame:
        """One row per text, one column per label (training order), rows summing to 1.
        ``progress``: a progress bar (None: when standard error is a terminal)."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__} {text!r}, not a string")
        from pgkd.progress import progress as progress_bar

        parts = []
        with progress_bar(len(texts), "predict", "text", enabled=progress) as bar:
            for start in range(0, len(texts), chunk_size):
                parts.append(self.student.predict_proba(texts[start:start + chunk_size]))
                bar.update(len(parts[-1]))
        proba = np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)
        return pd.DataFrame(proba, columns=self.labels)

    def predict(self, texts: Iterable[str], **kwargs) -> list[str]:
        """The most probable label of each text."""
        proba = self.predict_proba(texts, **kwargs)
        return [self.labels[i] for i in proba.to_numpy().argmax(1)]

    def top_k(self, texts: Iterable[str], k: int = 3, **kwargs) -> pd.DataFrame:
        """``predicted``, then ``label_1, proba_1, … label_k, proba_k`` per text (most probable first)."""
        proba = self.predict_proba(texts, **kwargs).to_numpy()
        k = max(1, min(k, len(self.labels)))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        columns = {"predicted": [self.labels[i] for i in order[:, 0]]}
        for j in range(k):
            columns[f"label_{j + 1}"] = [self.labels[i] for i in order[:, j]]
            columns[f"proba_{j + 1}"] = np.take_along_axis(proba, order[:, j:j + 1], 1)[:, 0].round(6)
        return pd.DataFrame(columns)

    def __repr__(self) -> str:
        student = self.spec.get("student", {})
        return (f"Classifier({student.get('kind')} {student.get('encoder')!r}, {len(self.labels)} labels, "
                f"from {self.path})")


def load(path: str | Path, **kwargs) -> Classifier:
    """``Classifier.load``: a run dir or a model folder."""
    return Classifier.load(path, **kwargs)
