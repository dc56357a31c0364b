"""Mining the student's training history: correctly classified, misclassified and hard-negative
examples (misclassified with the highest confidence in the wrong prediction).

Where the predictions come from (``pgkd.mining``):
- ``train``: the student's predictions on the rows it was trained on (the paper's reading);
- ``oof``: k-fold out-of-fold predictions, each row scored by a fresh model that never saw it;
- ``auto``: ``train`` when it shows at least as many errors as the prompt has room for,
  else ``oof`` (a student that fits its training set has no training errors to show).

Which rows are mined (``pgkd.mining_scope``): ``history`` (every row trained on so far),
``annotated`` (the human-labelled rows only) or ``latest`` (Algorithm 1's D^i: the batch the
teacher wrote last, the annotated rows D^0 at step 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

MINING_SOURCES = ("train", "oof", "auto")
MINING_SCOPES = ("history", "annotated", "latest")
MINED_COLUMNS = ["text", "label", "predicted", "confidence", "origin", "step"]


@dataclass
class Mined:
    correct: pd.DataFrame
    misclassified: pd.DataFrame
    hard_negatives: pd.DataFrame
    n_errors: int
    source: str  # "train" | "oof"

    def records(self) -> dict:
        """The mined rows with their origin (annotated / teacher) and step, for report.json."""
        return {name: getattr(self, name)[MINED_COLUMNS].to_dict("records")
                for name in ("correct", "misclassified", "hard_negatives")}


def in_scope(history: pd.DataFrame, scope: str) -> np.ndarray:
    """Boolean mask of the history rows that ``scope`` mines."""
    if scope not in MINING_SCOPES:
        raise ValueError(f"pgkd.mining_scope={scope!r}: choose one of {', '.join(MINING_SCOPES)}")
    if scope == "annotated":
        return (history.origin == "annotated").to_numpy()
    if scope == "latest":
        return (history.step == history.step.max()).to_numpy()
    return np.ones(len(history), dtype=bool)


def with_predictions(history: pd.DataFrame, proba: np.ndarray, taxonomy: Sequence[str]) -> pd.DataFrame:
    frame = history[["text", "label", "origin", "step"]].copy()
    frame["predicted"] = [taxonomy[i] for i in proba.argmax(1)]
    frame["confidence"] = proba.max(1)
    return frame


def count_errors(history: pd.DataFrame, proba: np.ndarray, taxonomy: Sequence[str]) -> int:
    return int((np.asarray(taxonomy)[proba.argmax(1)] != history.label.to_numpy()).sum())


def mine(history: pd.DataFrame, proba: np.ndarray, taxonomy: Sequence[str], n_correct: int,
         n_misclassified: int, n_hard_negatives: int, rng: np.random.Generator,
         source: str = "train", allowed: Callable[[str], bool] | None = None) -> Mined:
    """Sample ``n_correct`` correct and ``n_misclassified`` misclassified rows at random and take
    the ``n_hard_negatives`` misclassified rows the student was most confident about. Hard
    negatives are taken first; the misclassified sample is drawn from the other errors.
    ``allowed(text)`` filters rows that may appear in a prompt (the split firewall)."""
    frame = with_predictions(history, proba, taxonomy)
    if allowed is not None:
        frame = frame[[allowed(t) for t in frame.text]]
    wrong = frame[frame.predicted != frame.label]
    right = frame[frame.predicted == frame.label]
    hard = wrong.sort_values("confidence", ascending=False, kind="stable").head(n_hard_negatives)
    rest = wrong.drop(index=hard.index)  # a row is shown once: hard negative or misclassified

    def pick(rows: pd.DataFrame, n: int) -> pd.DataFrame:
        if len(rows) <= n:
            return rows
        return rows.iloc[np.sort(rng.choice(len(rows), size=n, replace=False))]

    return Mined(pick(right, n_correct), pick(rest, n_misclassified), hard, int(len(wrong)), source)


def out_of_fold_proba(history: pd.DataFrame, folds: int, seed: int,
                      fit_predict: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray], num_labels: int) -> np.ndarray:
    """Class probabilities for every history row from a model that did not train on it
    (k-fold; stratified when every class has ``folds`` rows). ``seed`` fixes the folds: the KD
    step number goes in, so a resumed run asks the teacher the same prompt."""
    counts = history.label.value_counts()
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if counts.min() >= folds
                else KFold(folds, shuffle=True, random_state=seed))
    proba = np.zeros((len(history), num_labels), dtype=np.float32)
    for train_idx, held_idx in splitter.split(history, history.label):
        proba[held_idx] = fit_predict(history.iloc[train_idx], history.iloc[held_idx])
    return proba
