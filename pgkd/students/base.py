"""The student interface and the Lightning fit harness every student shares."""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from pgkd.metrics import classification_metrics

TrainerFactory = Callable[..., pl.Trainer]


def inference_device(trainer: TrainerFactory | None) -> torch.device:
    """Where predictions run: the trainer's accelerator (Lightning moves a module back to the CPU
    when a fit ends; evaluation, mining and test scoring should not stay there on a GPU box)."""
    keywords = getattr(trainer, "keywords", {}) or {}
    wants_gpu = str(keywords.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
    return torch.device("cuda") if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


class RestoreBestWeights(Callback):
    """Load the best checkpoint into the module when fit ends, before any later ``on_fit_end``
    hook (the PGKD callback) sees the model. Lightning runs ModelCheckpoint callbacks last, so
    placing this one before the PGKD callback is enough."""

    def __init__(self, checkpoint: ModelCheckpoint):
        self.checkpoint = checkpoint

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.checkpoint.best_model_path
        if path and Path(path).exists():
            state = torch.load(path, map_location=pl_module.device, weights_only=True)
            pl_module.load_state_dict(state["state_dict"])


class Student(ABC):
    """A text classifier over a fixed taxonomy of ``num_labels`` classes.

    ``fit`` trains with Lightning (early stopping on ``val_loss``, best epoch restored) and passes
    extra callbacks through, which is how the PGKD callback hooks in after every fit.
    ``predict_proba`` returns one probability row per text over *all* classes.
    """

    name: str = "student"

    def __init__(self, num_labels: int, trainer: TrainerFactory | None = None,
                 early_stopping: Callable[[], EarlyStopping] | None = None,
                 workdir: str | Path = ".", batch_size: int = 64, eval_batch_size: int = 128,
                 warm_start: bool = False, kd_epochs: int | None = None, precision: str | None = None,
                 seed: int = 0):
        self.num_labels = num_labels
        self.trainer_factory = trainer or (lambda **kw: pl.Trainer(**{"max_epochs": 30, "accelerator": "cpu", **kw}))
        self.early_stopping = early_stopping or (lambda: EarlyStopping("val_loss", patience=5, mode="min"))
        self.workdir = Path(workdir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.warm_start, self.kd_epochs = warm_start, kd_epochs
        self.precision = precision  # the trainer's precision for this student's fits (None: the trainer's)
        self.seed = seed
        self.module: pl.LightningModule | None = None
        self.last_fit: dict = {}
        self.device = inference_device(trainer)

    @abstractmethod
    def new_module(self) -> pl.LightningModule:
        """A freshly initialised LightningModule (pretrained encoder + new head)."""

    @abstractmethod
    def datamodule(self, train: tuple[Sequence[str], Sequence[int]],
                   val: tuple[Sequence[str], Sequence[int]]) -> pl.LightningDataModule:
        """The LightningDataModule for one fit."""

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), num_labels)."""

    def fit(self, texts: Sequence[str], labels: Sequence[int], val_texts: Sequence[str],
            val_labels: Sequence[int], callbacks: Sequence[Callback] = (), logger=False,
            name: str = "fit") -> dict:
        """Train on (texts, labels) with early stopping on the validation loss; the best epoch's
        weights are restored. Re-initialises from the pretrained weights unless ``warm_start``,
        which continues from the current weights for at most ``kd_epochs`` epochs."""
        pl.seed_everything(self.seed, workers=True, verbose=False)
        continuing = self.module is not None and self.warm_start
        if not continuing:
            self.module = self.new_module()
        self.before_fit(continuing)
        checkpoint_dir = self.workdir / "checkpoints" / name
        checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val_loss",
                                     mode="min", save_top_k=1, save_weights_only=True,
                                     enable_version_counter=False)
        early_stopping = self.early_stopping()
        overrides = {"max_epochs": self.kd_epochs} if continuing and self.kd_epochs else {}
        if self.precision:
            overrides["precision"] = self.precision
        trainer = self.trainer_factory(
            callbacks=[early_stopping, RestoreBestWeights(checkpoint), *callbacks, checkpoint],
            logger=logger, default_root_dir=str(self.workdir), **overrides,
        )
        self._fit_started = time.perf_counter()
        self._fit_size = len(texts)
        data = self.datamodule((list(texts), list(labels)), (list(val_texts), list(val_labels)))
        trainer.fit(self.module, datamodule=data)
        self.last_fit = self.fit_info(trainer)
        shutil.rmtree(checkpoint_dir.parent, ignore_errors=True)
        return self.last_fit

    def prepare(self, train_texts: Sequence[str]) -> None:
        """Settings taken from the annotated training texts, once, before the first fit (the
        fine-tuned student's ``max_length: auto``)."""

    def before_fit(self, continuing: bool) -> None:
        """Called with the module about to be trained; ``continuing``: a warm-started KD fit."""

    def fit_info(self, trainer: pl.Trainer) -> dict:
        """Facts about the fit in progress or just finished (callbacks call this in on_fit_end)."""
        checkpoint, early_stopping = trainer.checkpoint_callback, trainer.early_stopping_callback
        best = checkpoint.best_model_score if checkpoint is not None else None
        return {
            "wall_s": time.perf_counter() - self._fit_started,
            "train_size": self._fit_size,
            "epochs": int(trainer.current_epoch),
            "best_epoch_val_loss": float(best) if best is not None else None,
            "stopped_early": bool(early_stopping is not None and early_stopping.stopped_epoch),
        }

    def evaluate(self, texts: Sequence[str], labels: Sequence[int], taxonomy: Sequence[str]) -> dict:
        """Loss, accuracy, macro/weighted F1 and the per-class report on a labelled split."""
        proba = self.predict_proba(texts)
        return classification_metrics(labels, proba.argmax(1), taxonomy, proba)

    def save(self, path: str | Path) -> None:
        """The module's weights only (the loop's resume checkpoints); ``save_pretrained`` writes
        the self-describing artifact users load with ``pgkd.load``."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), path)

    @abstractmethod
    def save_pretrained(self, model_dir: str | Path, labels: Sequence[str]) -> dict:
        """Write the trained model into ``model_dir`` in its library's own format; return the
        student spec (``kind``, encoder, pooling, max length) that ``from_pretrained`` reads."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, model_dir: str | Path, spec: dict, labels: Sequence[str],
                        cache_dir: str | Path | None = None, device: torch.device | None = None) -> "Student":
        """The student ``save_pretrained`` wrote, ready to predict on ``device`` (default: CPU)."""

    def load(self, path: str | Path) -> None:
        if self.module is None:
            self.module = self.new_module()
        self.module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches over texts sorted by length: far less padding at inference."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
