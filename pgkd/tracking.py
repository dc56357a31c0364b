"""Run-level logging: Lightning loggers for every fit of a run, plus KD-step metrics and tables
for W&B (one W&B run per job, shared by all its fits)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pandas as pd
from pytorch_lightning.loggers import Logger, WandbLogger


# Every name logged to W&B, and read back by the dashboard (pgkd/dashboard.py): one place, so
# the two cannot drift. KD-step metrics are "kd/<key of the loop's step record>".
KD_PREFIX = "kd/"
KD_STEP = f"{KD_PREFIX}step"
KD_VAL_LOSS = f"{KD_PREFIX}val_loss"
KD_VAL_ACCURACY = f"{KD_PREFIX}val_accuracy"
KD_VAL_MACRO_F1 = f"{KD_PREFIX}val_macro_f1"
KD_ACCEPTED = f"{KD_PREFIX}accepted"
TEST_METRICS = ("loss", "accuracy", "macro_f1", "weighted_f1")
TEST_ACCURACY = "test/accuracy"
TEST_MACRO_F1 = "test/macro_f1"
MODEL_0_TEST_ACCURACY = "model_0/test_accuracy"
MODEL_0_TEST_MACRO_F1 = "model_0/test_macro_f1"
TEACHER_TOTALS = ("calls", "cost_usd", "input_tokens", "output_tokens")  # logged as teacher/<name>
TEACHER_CALLS = "teacher/calls"
TEACHER_COST_USD = "teacher/cost_usd"
PER_CLASS_F1_TABLE = f"{KD_PREFIX}per_class_f1"
GENERATED_SAMPLES_TABLE = f"{KD_PREFIX}generated_samples"
# run config keys the dashboard groups and filters by (besides the tags)
METHOD_KEY = "pgkd.run_tag"
DATASET_KEY = "dataset.name"
DATASET_METHOD_KEY = "dataset_method"


def run_config(cfg: dict) -> dict:
    """The config a W&B run records: the resolved (redacted) config plus ``dataset_method``, the
    one key that groups a bar chart by dataset × method."""
    return {**cfg, DATASET_METHOD_KEY: f"{cfg['dataset']['name']} | {cfg['pgkd']['run_tag']}"}


def kd_metrics(record: dict) -> dict[str, float]:
    """A KD step's numeric counters as ``kd/*`` metrics (``kd/step`` among them)."""
    return {f"{KD_PREFIX}{k}": v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def final_metrics(test: dict, model_0: dict | None = None, teacher: dict | None = None) -> dict[str, float]:
    """The tested model's ``test/*`` metrics, model_0's beside them, the teacher's totals."""
    metrics = {f"test/{k}": test[k] for k in TEST_METRICS}
    if model_0 is not None:
        metrics.update({MODEL_0_TEST_ACCURACY: model_0["accuracy"], MODEL_0_TEST_MACRO_F1: model_0["macro_f1"]})
    if teacher is not None:
        metrics.update({f"teacher/{k}": teacher.get(k, 0) for k in TEACHER_TOTALS})
    return metrics


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
            logger.experiment.define_metric(f"{KD_PREFIX}*", step_metric=KD_STEP)

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
