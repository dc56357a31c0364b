"""Run-level logging: Lightning loggers for every fit of a run, plus KD-step metrics and tables
for W&B (one W&B run per job, shared by all its fits)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pandas as pd
from pytorch_lightning.loggers import Logger, WandbLogger


KD_STEP = "kd/step"


class RunLoggers:
    """Built from the instantiated ``logger`` config group: a mapping of logger factories."""

    def __init__(self, factories: Mapping[str, Callable[..., Logger]] | None, hparams: dict | None = None,
                 save_dir: str | None = None):
        factories = dict(factories or {})
        self.save_dir = save_dir
        self.csv_factory = factories.pop("csv", None)
        where = {"save_dir": save_dir} if save_dir else {}
        self.shared: list[Logger] = [factory(**where) for factory in factories.values()]
        for logger in self.shared:
            if hparams:
                logger.log_hyperparams(hparams)
        for logger in self.wandb:
            # KD-step metrics are plotted against the KD step, not the trainer's global step
            logger.experiment.define_metric(KD_STEP)
            logger.experiment.define_metric("kd/*", step_metric=KD_STEP)

    def for_fit(self, name: str) -> list[Logger] | bool:
        """Loggers for one Lightning fit (a CSV log per fit + the shared run loggers)."""
        where = {"save_dir": self.save_dir} if self.save_dir else {}
        loggers = ([self.csv_factory(version=name, **where)] if self.csv_factory else []) + self.shared
        return loggers or False

    @property
    def wandb(self) -> list[WandbLogger]:
        return [logger for logger in self.shared if isinstance(logger, WandbLogger)]

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for logger in self.shared:
            logger.log_metrics(metrics, step=None)
            logger.save()

    def log_table(self, key: str, frame: pd.DataFrame) -> None:
        for logger in self.wandb:
            logger.log_table(key=key, dataframe=frame)

    def finish(self) -> None:
        for logger in self.wandb:
            logger.experiment.finish()
