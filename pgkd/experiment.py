"""One job: the composed config in, a run dir with ``config.yaml`` and ``metrics.json`` out.
Callable from tests without Hydra; ``scripts/run.py`` is a thin wrapper."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from pgkd.config import read_json, save_config, to_plain, write_json
from pgkd.data import DataError, DatasetUnavailable, TextDataset
from pgkd.identity import provenance
from pgkd.metrics import summary
from pgkd.students import Student
from pgkd.tracking import RunLoggers, run_config, final_metrics

log = logging.getLogger(__name__)


def load_data(cfg: DictConfig) -> TextDataset:
    """Instantiate ``cfg.dataset``, re-raising data errors with their own type (Hydra wraps them)."""
    try:
        return instantiate(cfg.dataset)
    except InstantiationException as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        raise


# What a run writes into its folder (``force=true`` removes exactly these before redoing it).
RUN_ARTIFACTS = ("metrics.json", "pgkd_state.json", "history.csv", "history.csv.tmp", "steps",
                 "teacher_ledger.jsonl", "best_model.pt", "last_model.pt", "model.pt", "model",
                 "predictions.jsonl", "lightning", "config.yaml", "continued_from.json", "export")


class RunDirConflict(RuntimeError):
    """The run dir holds results of another config; nothing is overwritten."""


def clear_run(run_dir: Path) -> None:
    """Remove a run's results (``force=true``); Hydra's own files and the job log stay."""
    for name in RUN_ARTIFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def open_run(cfg: DictConfig, run_dir: Path, header: dict) -> tuple[TextDataset | None, dict | None]:
    """(data, None) for a run to do; (None, metrics) for one that finished or was skipped before
    with the same config hash, or whose dataset is unavailable (recorded as skipped, not a crash).

    ``force=true`` removes the previous results first. A finished run with another hash is
    never returned: a PGKD run of the same lineage (e.g. fewer ``num_kd_steps``) is continued,
    anything else raises ``RunDirConflict``.
    """
    metrics_path = run_dir / "metrics.json"
    identity = provenance(cfg)
    if cfg.get("force", False):
        clear_run(run_dir)
    elif metrics_path.exists():
        previous = read_json(metrics_path)
        same = previous.get("config_hash") == identity["config_hash"]
        if same and previous.get("status") in ("finished", "skipped") and previous.get("stopped") != "budget":
            log.info("%s: already %s with config %s (force=true to redo)", run_dir, previous["status"],
                     identity["config_hash"])
            return None, previous
        if not same and previous.get("lineage_hash") != identity["lineage_hash"]:
            raise RunDirConflict(
                f"{run_dir} holds results of another config (config hash {previous.get('config_hash')} != "
                f"{identity['config_hash']}); pass force=true to replace them or use another run dir")
    header.update(identity)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    try:
        return load_data(cfg), None
    except DatasetUnavailable as error:
        log.warning("skipping %s: %s", cfg.run_name, error)
        result = {**header, "status": "skipped", "reason": str(error)}
        write_json(metrics_path, result)
        return None, result


def build_student(cfg: DictConfig, num_labels: int, run_dir: Path) -> Student:
    """Instantiate ``cfg.student`` with the trainer and early-stopping factories of the config."""
    callbacks = instantiate(cfg.callbacks)
    return instantiate(cfg.student, num_labels=num_labels, trainer=instantiate(cfg.trainer),
                       early_stopping=callbacks["early_stopping"], workdir=str(run_dir), seed=cfg.seed)


def train_baseline(data: TextDataset, student: Student, loggers: RunLoggers, run_dir: Path) -> dict:
    """Fine-tune model_0 on the annotated train split; evaluate on validation and test."""
    started = time.perf_counter()
    fit = student.fit(data.train.text, data.ids(data.train.label), data.val.text,
                      data.ids(data.val.label), logger=loggers.for_fit("model_0"), name="model_0")
    fitted = time.perf_counter()
    val = student.evaluate(data.val.text, data.ids(data.val.label), data.taxonomy)
    test = student.evaluate(data.test.text, data.ids(data.test.label), data.taxonomy)
    log.info("model_0 val: %s | test: %s", summary(val), summary(test))
    return {"val": val, "test": test, "fit": fit,
            "timing": {"fit_s": fitted - started, "evaluate_s": time.perf_counter() - fitted}}


def save_model(student: Student, run_dir: Path, data: TextDataset, result: dict) -> Path:
    """The run's model artifact (``<run_dir>/model/``, see ``pgkd.classifier``): the student as
    it was tested — model_0 for a baseline, the kept step for PGKD."""
    from pgkd.classifier import MODEL_DIR, save_classifier

    keys = ("run_name", "dataset", "method", "seed", "n_annotated", "config_hash", "best_step")
    run = {key: result[key] for key in keys if key in result}
    run["test"] = {k: result["test"][k] for k in ("accuracy", "macro_f1", "weighted_f1", "n") if k in result["test"]}
    shutil.rmtree(run_dir / MODEL_DIR, ignore_errors=True)
    return save_classifier(student, run_dir / MODEL_DIR, data.taxonomy, run)


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Run the job described by ``cfg`` (baseline or PGKD) in ``run_dir`` and return its metrics.

    A run dir whose ``metrics.json`` says finished (or skipped) is returned as is unless
    ``cfg.force``; an unfinished PGKD run resumes after its last finished KD step.
    """
    run_dir = Path(run_dir or cfg.paths.output_dir)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    started = time.perf_counter()
    header = {"run_name": cfg.run_name, "dataset": cfg.dataset.name, "student": cfg.student.name,
              "method": cfg.pgkd.run_tag, "seed": int(cfg.seed), "n_annotated": int(cfg.dataset.n_annotated)}
    if cfg.get("dry_run", False):
        return plan_only(cfg)
    data, done = open_run(cfg, run_dir, header)
    if done is not None:
        return done
    header.update(n_classes=len(data.taxonomy), data_source=data.source,
                  sizes={"train": len(data.train), "val": len(data.val), "test": len(data.test)})
    student = build_student(cfg, len(data.taxonomy), run_dir)
    student.prepare(data.train.text)
    loggers = RunLoggers(instantiate(cfg.logger), run_config(to_plain(cfg)), save_dir=str(run_dir))
    try:
        if cfg.pgkd.enabled:
            from pgkd.loop import run_pgkd_from_config

            result = run_pgkd_from_config(cfg, data, student, loggers, run_dir)
        else:
            result = train_baseline(data, student, loggers, run_dir)
        if result.get("status", "finished") == "finished":
            loggers.log_metrics(final_metrics(result["test"], (result.get("model_0") or {}).get("test"),
                                             result.get("teacher")))
    finally:
        loggers.finish()
    result = {**header, **result, "status": result.get("status", "finished")}
    if result["status"] == "finished":
        result["model_dir"] = str(save_model(student, run_dir, data, result).relative_to(run_dir))
    result.setdefault("timing", {})["total_s"] = time.perf_counter() - started
    write_json(run_dir / "metrics.json", result)
    log.info("summary of %s\n%s", run_dir, format_summary(result))
    return result


def plan_only(cfg: DictConfig) -> dict:
    """``dry_run=true``: print the first KD prompt and the run's cost; fit nothing, call nothing."""
    if not cfg.pgkd.enabled:
        raise ValueError("dry_run=true prints the teacher's first prompt and the run's cost; a baseline "
                         "(pgkd=off) never calls a teacher")
    from pgkd.dry_run import dry_run, render

    plan = dry_run(cfg, load_data(cfg))
    print(render(plan))
    return plan


def format_summary(result: dict) -> str:
    """model_0 vs best test metrics and the per-step validation table of a run."""
    lines = []
    if "steps" in result:
        lines.append("step  val_loss  val_acc  val_macroF1  accepted  rejected  calls  wall_s")
        for s in result["steps"]:
            rejected = sum(s.get("rejected", {}).values())
            lines.append(f"{s['step']:>4}  {s['val_loss']:8.4f}  {s['val_accuracy']:7.3f}  {s['val_macro_f1']:11.3f}"
                         f"  {s['accepted']:>8}  {rejected:>8}  {s['calls']:>5}  {s['wall_s']:6.1f}")
        lines.append(f"model_0 test: {summary(result['model_0']['test'])}")
        lines.append(f"best (step {result['best_step']}, stopped: {result['stopped']}) test: {summary(result['test'])}")
        if "summary" in result:
            lines += format_pgkd_verdict(result["summary"])
    else:
        lines.append(f"test: {summary(result['test'])}")
    return "\n".join(lines)


def format_pgkd_verdict(verdict: dict, max_classes: int = 12) -> list[str]:
    """Did PGKD help: test Δ, warnings, and the weakest classes' generated samples."""
    acc, f1 = verdict["test_accuracy"], verdict["test_macro_f1"]
    lines = [f"PGKD vs model_0 on test: accuracy {acc['model_0']:.4f} -> {acc['kept']:.4f} ({100 * acc['delta']:+.2f} pts), "
             f"macro-F1 {f1['model_0']:.4f} -> {f1['kept']:.4f} ({100 * f1['delta']:+.2f} pts); kept step "
             f"{verdict['kept_step']}"]
    lines += [f"WARNING: {warning}" for warning in verdict["warnings"]]
    rows = verdict["per_class"]
    if any(r["generated"] for r in rows):
        rho = verdict.get("generated_vs_shown_f1_spearman")
        lines.append("generated samples per class, weakest classes first"
                     + (f" (Spearman of samples vs the F1 the teacher was shown: {rho:+.2f}; negative = it wrote "
                        "for weak classes)" if rho is not None else "") + ":")
        lines.append(f"  {'class':<32} {'val F1 model_0':>14} {'generated':>9} {'val F1 kept':>11}")
        for r in rows[:max_classes]:
            kept = f"{r['val_f1_kept']:.3f}" if r["val_f1_kept"] is not None else "-"
            lines.append(f"  {str(r['label'])[:32]:<32} {r['val_f1_model_0']:>14.3f} {r['generated']:>9} {kept:>11}")
        if len(rows) > max_classes:
            lines.append(f"  ... {len(rows) - max_classes} more classes in metrics.json (summary.per_class)")
    return lines
