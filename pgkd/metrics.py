"""Classification metrics shared by students, the PGKD loop and the zero-shot baseline."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def classification_metrics(gold: Sequence[int], pred: Sequence[int], taxonomy: Sequence[str],
                           proba: np.ndarray | None = None) -> dict:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and (given the
    class probabilities) the cross-entropy loss. Classes absent from ``gold`` keep support 0.

    Macro/weighted F1 average over the classes present in ``gold`` or ``pred``, as scikit-learn's
    classification report does, so a 363-class taxonomy with 40 classes in a test split is not
    scored on 323 empty classes. A prediction of -1 (an unusable LLM answer) counts as wrong.
    """
    gold, pred = np.asarray(gold), np.asarray(pred)
    labels = np.arange(len(taxonomy))
    present = np.union1d(gold, pred[pred >= 0])
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=labels, zero_division=0
    )
    metrics = {
        "n": int(len(gold)),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, pred, labels=present, average="weighted", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(taxonomy, precision, recall, f1, support)
        },
    }
    if proba is not None:
        picked = np.asarray(proba)[np.arange(len(gold)), gold]
        metrics["loss"] = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
    return metrics


def top_confusions(gold: Sequence[int], pred: Sequence[int], taxonomy: Sequence[str], k: int) -> list[list]:
    """The ``k`` most frequent (gold label, predicted label, count) errors, most frequent first
    (ties by label order): counts and label names only."""
    pairs: dict[tuple[int, int], int] = {}
    for g, p in zip(np.asarray(gold), np.asarray(pred)):
        if g != p and p >= 0:
            pairs[(int(g), int(p))] = pairs.get((int(g), int(p)), 0) + 1
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [[taxonomy[g], taxonomy[p], n] for (g, p), n in ranked]


def summary(metrics: dict, keys: Sequence[str] = ("loss", "accuracy", "macro_f1", "weighted_f1")) -> str:
    """One line such as ``loss 0.412  accuracy 0.851  macro_f1 0.850``."""
    return "  ".join(f"{key} {metrics[key]:.3f}" for key in keys if key in metrics)
