"""The PGKD loop (paper Algorithm 1).

``run_pgkd`` is the algorithm, top to bottom::

    fit model_0 on the annotated train split
    repeat:
        evaluate on validation; keep the best model; stop at max steps or patience   (PGKDCallback)
        mine the history, prompt the teacher, keep its valid samples                  (teacher_step)
        fit on the grown history
    test the kept model

A Lightning callback (``PGKDCallback``) hands every finished fit to ``KDLoop.after_fit``, which
decides the early stop; the teacher step runs between fits (its out-of-fold mining fits models
of its own, which must not happen inside another fit's hook). ``KDState`` is the typed state,
written atomically after every fit and every teacher step, so a killed run resumes where it was.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from sklearn.model_selection import train_test_split

from pgkd.config import read_json, write_json
from pgkd.data import TextDataset
from pgkd.identity import lineage_hash
from pgkd.metrics import classification_metrics, summary, top_confusions
from pgkd.mining import MINING_SOURCES, count_errors, in_scope, mine, out_of_fold_proba
from pgkd.parsing import LabelMap, SplitFirewall, normalize, parse_samples
from pgkd.progress import progress
from pgkd.prompt import build_pgkd_messages, generation_schema
from pgkd.students import Student
from pgkd.teacher import BudgetExceeded, SamplingParams, TeacherClient, build_teacher
from pgkd.tracking import GENERATED_SAMPLES_TABLE, PER_CLASS_F1_TABLE, RunLoggers, kd_metrics

log = logging.getLogger(__name__)
HISTORY_COLUMNS = ["text", "label", "step", "origin", "teacher_model", "prompt_hash", "request_index",
                   "parse_status", "answers"]
NO_TEACHER = {"accepted": 0, "rejected": {}, "calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
              "teacher_s": 0.0}


class PGKDConfigError(ValueError):
    """A PGKD setting that cannot work; the message names the key."""


def read_history(path: str | Path) -> pd.DataFrame:
    """``history.csv`` as written: text and label columns stay strings (labels "0", "1" included)."""
    text_columns = {c: str for c in HISTORY_COLUMNS if c not in ("step", "request_index")}
    return pd.read_csv(path, keep_default_na=False, dtype=text_columns)


@dataclass
class PGKDSettings:
    """The ``pgkd`` config group (paper defaults)."""

    num_kd_steps: int = 10
    patience: int = 5
    samples_per_step: int = 32
    samples_per_call: int = 32
    max_calls_per_step: int = 12
    n_fewshot: int = 16
    n_correct: int = 16
    n_misclassified: int = 16
    n_hard_negatives: int = 16
    use_validation_report: bool = True
    use_hard_negatives: bool = True
    mining: str = "auto"
    mining_scope: str = "history"
    oof_folds: int = 5
    report_confusions: int = 0
    selection_fraction: float = 0.0
    max_text_chars: int = 2000
    near_duplicate_threshold: float = 0.8
    prompt_example_chars: int = 400
    report_max_classes: int | None = None
    reject_history_copies: bool = True
    temperature: float = 1.0
    max_tokens: int = 4096

    def __post_init__(self):
        if self.mining not in MINING_SOURCES:
            raise PGKDConfigError(f"pgkd.mining={self.mining!r}: choose one of {', '.join(MINING_SOURCES)}")
        if not 0.0 <= self.selection_fraction < 1.0:
            raise PGKDConfigError(f"pgkd.selection_fraction={self.selection_fraction}: must be in [0, 1)")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "PGKDSettings":
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})

    @property
    def hard_negatives_asked(self) -> int:
        """The w/o-hard-negatives ablation mines none (so it differs from PGKD by one section)."""
        return self.n_hard_negatives if self.use_hard_negatives else 0


@dataclass
class KDState:
    """Where a PGKD run is. ``step`` is the number of the next fit; ``phase`` says what is due:
    ``fit`` (the history is ready for it) or ``teacher`` (its samples must be generated first)."""

    fingerprint: str = ""
    step: int = 0
    phase: str = "fit"
    stopped: str | None = None
    best_step: int | None = None
    best_val_loss: float | None = None
    patience_counter: int = 0
    history_len: int = 0
    steps: list[dict] = field(default_factory=list)
    pending: dict | None = None  # counters of the teacher step whose samples await their fit
    model_0: dict | None = None
    best_val: dict | None = None
    last_report: dict | None = None  # the validation numbers the next teacher step reports
    exhausted_step: dict | None = None

    @classmethod
    def load(cls, path: Path) -> "KDState":
        saved = read_json(path)
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


@dataclass
class TeacherContext:
    """What a teacher step needs besides the history and the student's predictions."""

    data: TextDataset
    teacher: TeacherClient
    settings: PGKDSettings
    prompt_cfg: Mapping
    firewall: SplitFirewall
    labels: LabelMap
    seed: int
    run_dir: Path


def kd_prompt(settings: PGKDSettings, prompt_cfg: Mapping, taxonomy: list[str], fewshot: pd.DataFrame,
              n_samples: int, report: dict, mined) -> tuple[list, list[str]]:
    """A KD step's prompt (messages, section names) with the sections the settings keep."""
    shown = report if settings.use_validation_report else None
    return build_pgkd_messages(
        prompt_cfg, taxonomy=taxonomy, fewshot=fewshot, n_samples=n_samples, report=shown,
        correct=mined.correct, misclassified=mined.misclassified,
        hard_negatives=mined.hard_negatives if settings.use_hard_negatives else None,
        max_chars=settings.prompt_example_chars, report_max_classes=settings.report_max_classes,
        confusions=shown.get("confusions") if shown else None)


def teacher_step(step: int, history: pd.DataFrame, proba: np.ndarray, source: str, report: dict,
                 ctx: TeacherContext, training_errors: int | None = None) -> tuple[pd.DataFrame, dict]:
    """One KD step's data: mine → prompt → ask → parse → accept.

    ``proba`` are the student's class probabilities for every history row (``source`` says
    whose: ``train`` or ``oof``); ``report`` the validation numbers the teacher may see. Each call
    (re-asks too) draws its own few-shot and mined examples, so re-asks are distinct prompts.
    ``training_errors`` (the errors of the student's own predictions, when known) is recorded.
    Returns the accepted samples (history rows) and the step's counters.
    """
    settings, data = ctx.settings, ctx.data
    started = time.perf_counter()
    rng = np.random.default_rng([ctx.seed, step])
    allowed = np.array([ctx.firewall.reason(t) is None for t in history.text], dtype=bool)
    scope = in_scope(history, settings.mining_scope)
    quotable = history[allowed & scope]
    quotable_proba = proba[allowed & scope]
    annotated = history[allowed & (history.origin == "annotated").to_numpy()]
    step_dir = ctx.run_dir / "steps" / f"step_{step:02d}"
    step_dir.mkdir(parents=True, exist_ok=True)
    seen = set(history.text.map(normalize))
    near_history = (SplitFirewall(history.text, settings.near_duplicate_threshold, prefix="history")
                    if settings.reject_history_copies else None)
    accepted: list[dict] = []
    mined_per_call: list[dict] = []
    counters = {**NO_TEACHER, "rejected": {}, "mining": source, "mining_scope": settings.mining_scope,
                "mined_errors": count_errors(history[scope], proba[scope], data.taxonomy),
                "training_errors": training_errors}
    sections: list[str] = []
    with progress(settings.samples_per_step, f"KD step {step}: teacher", "sample") as bar:
        for call in range(settings.max_calls_per_step):
            missing = settings.samples_per_step - len(accepted)
            if missing <= 0:
                break
            n = min(settings.samples_per_call, missing)
            bar.set_postfix(call=call + 1, rejected=sum(counters["rejected"].values()))
            mined = mine(quotable, quotable_proba, data.taxonomy, settings.n_correct, settings.n_misclassified,
                         settings.hard_negatives_asked, rng, source)
            fewshot = annotated.iloc[np.sort(rng.choice(len(annotated), min(settings.n_fewshot, len(annotated)),
                                                        replace=False))]
            messages, sections = kd_prompt(settings, ctx.prompt_cfg, data.taxonomy, fewshot, n, report, mined)
            if call == 0:
                counters.update(prompt_correct=len(mined.correct), prompt_misclassified=len(mined.misclassified),
                                prompt_hard_negatives=len(mined.hard_negatives) if settings.use_hard_negatives else 0)
            mined_per_call.append(mined.records())
            prompt_text = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
            prompt_hash = hashlib.sha256(prompt_text.encode()).hexdigest()[:16]
            (step_dir / f"prompt_{call:02d}.txt").write_text(prompt_text)
            params = SamplingParams(temperature=settings.temperature, max_tokens=settings.max_tokens,
                                    seed=ctx.seed * 100_003 + step * 1_009 + call,
                                    json_schema=generation_schema(data.taxonomy, n))
            reply = ctx.teacher.ask(messages, params, request_index=call, purpose=f"pgkd_step_{step}",
                                    accept=lambda text: parse_samples(text, ctx.labels).parsed)
            (step_dir / f"reply_{call:02d}.txt").write_text(reply.text)
            result = parse_samples(reply.text, ctx.labels, seen=seen, firewall=ctx.firewall,
                                   history=near_history, max_chars=settings.max_text_chars)
            for reason, count in result.rejected.items():
                counters["rejected"][reason] = counters["rejected"].get(reason, 0) + count
            for sample in result.samples[:missing]:
                accepted.append({"text": sample["text"], "label": sample["label"], "step": step,
                                 "origin": "teacher", "teacher_model": reply.model or ctx.teacher.model,
                                 "prompt_hash": prompt_hash, "request_index": call, "parse_status": "ok",
                                 "answers": sample.get("target_class") or sample.get("addresses") or ""})
            counters["calls"] += 1
            counters["input_tokens"] += reply.input_tokens
            counters["output_tokens"] += reply.output_tokens
            counters["cost_usd"] += reply.cost_usd
            bar.update(len(accepted) - bar.n)
    counters.update(accepted=len(accepted), sections=sections, teacher_s=time.perf_counter() - started)
    new = pd.DataFrame(accepted, columns=HISTORY_COLUMNS)
    new.to_csv(step_dir / "samples.csv", index=False)
    write_json(step_dir / "report.json", {"validation": report, "counters": counters,
                                          "mined": mined_per_call[0] if mined_per_call else {},
                                          "mined_per_call": mined_per_call})
    log.info("KD step %d: %d samples accepted, rejected %s, %d calls (mined from %s: %d misclassified, "
             "%d hard negatives in the prompt)", step, len(accepted), counters["rejected"] or "none",
             counters["calls"], source, counters.get("prompt_misclassified", 0), counters.get("prompt_hard_negatives", 0))
    if len(accepted) < settings.samples_per_step:
        log.warning("KD step %d: only %d of %d samples after %d calls", step, len(accepted),
                    settings.samples_per_step, counters["calls"])
    return new, counters


def split_validation(val: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reported, selection) parts of the validation split: the selection part is never reported
    to the teacher and alone decides early stopping and the kept model (``selection_fraction``).
    With fraction 0 both are the whole split (the paper)."""
    if fraction <= 0:
        return val, val
    counts = val.label.value_counts()
    stratify = val.label if counts.min() >= 2 else None
    reported, selection = train_test_split(val, test_size=fraction, random_state=seed, stratify=stratify)
    return reported.reset_index(drop=True), selection.reset_index(drop=True)


class KDLoop:
    """State, history and model bookkeeping of one PGKD run (see the module docstring)."""

    def __init__(self, data: TextDataset, student: Student, teacher: TeacherClient, settings: PGKDSettings,
                 prompt_cfg: Mapping, run_dir: str | Path, loggers: RunLoggers | None = None, seed: int = 0,
                 run_fingerprint: str = ""):
        self.data, self.student, self.settings, self.seed = data, student, settings, seed
        self.run_dir = Path(run_dir)
        self.loggers = loggers or RunLoggers({})
        self.report_val, self.selection_val = split_validation(data.val, settings.selection_fraction, seed)
        self.ctx = TeacherContext(data, teacher, settings, prompt_cfg,
                                  SplitFirewall(list(data.val.text) + list(data.test.text),
                                                settings.near_duplicate_threshold),
                                  LabelMap(data.taxonomy), seed, self.run_dir)
        self.state_path, self.history_path = self.run_dir / "pgkd_state.json", self.run_dir / "history.csv"
        if self.state_path.exists():
            self.state = KDState.load(self.state_path)
            self.history = read_history(self.history_path).head(self.state.history_len)
            self._resume(run_fingerprint)
        else:
            self.state = KDState(fingerprint=run_fingerprint, history_len=len(data.train))
            self.history = pd.DataFrame({"text": data.train.text, "label": data.train.label, "step": 0,
                                         "origin": "annotated", "teacher_model": "", "prompt_hash": "",
                                         "request_index": -1, "parse_status": "", "answers": ""})

    def _resume(self, run_fingerprint: str) -> None:
        state = self.state
        if run_fingerprint and state.fingerprint != run_fingerprint:
            raise RuntimeError(f"{self.run_dir} holds a PGKD run with another config (lineage hash "
                               f"{state.fingerprint} != {run_fingerprint}); use another run dir or force=true")
        log.info("resuming %s at KD step %d (%s due, history %d rows)", self.run_dir, state.step, state.phase,
                 len(self.history))
        if state.stopped == "budget":  # re-run (with a larger budget): ask again, then go on
            state.stopped = None
        last_fit = state.step - 1
        if state.stopped == "max_steps" and self.settings.num_kd_steps != last_fit:
            if self.settings.num_kd_steps < last_fit:
                raise RuntimeError(f"{self.run_dir} already holds {last_fit} KD steps, more than num_kd_steps="
                                   f"{self.settings.num_kd_steps}; use another run dir or force=true")
            log.info("continuing %s: %d -> %d KD steps", self.run_dir, last_fit, self.settings.num_kd_steps)
            state.stopped, state.phase = None, "teacher"
        if state.step > 0 and not self.should_stop and (self.run_dir / "last_model.pt").exists():
            self.student.load(self.run_dir / "last_model.pt")  # the model the next step mines (or warm-starts) from

    # -- read by run_pgkd ------------------------------------------------------------------
    @property
    def should_stop(self) -> bool:
        return self.state.stopped is not None

    @property
    def teacher_due(self) -> bool:
        return not self.should_stop and self.state.phase == "teacher"

    def training_data(self) -> tuple[list[str], list[int]]:
        return list(self.history.text), self.data.ids(self.history.label)

    def validation_data(self) -> tuple[list[str], list[int]]:
        """What every fit early-stops on: the selection part of the validation split."""
        return list(self.selection_val.text), self.data.ids(self.selection_val.label)

    # -- after each fit (called by PGKDCallback) ---------------------------------------------
    def evaluate(self, frame: pd.DataFrame, confusions: int = 0) -> dict:
        proba = self.student.predict_proba(frame.text)
        gold = self.data.ids(frame.label)
        metrics = classification_metrics(gold, proba.argmax(1), self.data.taxonomy, proba)
        if confusions:
            metrics["confusions"] = top_confusions(gold, proba.argmax(1), self.data.taxonomy, confusions)
        return metrics

    def after_fit(self, fit_info: dict | None = None) -> None:
        """Evaluate the model just fitted, keep it if it is the best so far, decide the stop."""
        started = time.perf_counter()
        state, settings, step = self.state, self.settings, self.state.step
        val = self.evaluate(self.selection_val)
        separate = self.report_val is not self.selection_val
        report = (self.evaluate(self.report_val, settings.report_confusions) if separate or settings.report_confusions
                  else val)
        record = {"step": step, "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                  "val_macro_f1": val["macro_f1"], "val_weighted_f1": val["weighted_f1"],
                  "per_class_f1": {k: v["f1"] for k, v in val["per_class"].items()},
                  "history_size": len(self.history), "fit": fit_info or {}, **(state.pending or NO_TEACHER)}
        if separate:
            record.update(report_val_loss=report["loss"], report_val_macro_f1=report["macro_f1"])
        if step == 0:
            test = self.evaluate(self.data.test)
            state.model_0 = {"val": val, "test": test}
            log.info("model_0 val: %s | test: %s", summary(val), summary(test))
        if state.best_val_loss is None or val["loss"] < state.best_val_loss:
            state.best_val_loss, state.best_step, state.patience_counter, state.best_val = val["loss"], step, 0, val
            self.student.save(self.run_dir / "best_model.pt")
        else:
            state.patience_counter += 1
        self.student.save(self.run_dir / "last_model.pt")  # what the next step mines from (and resumes with)
        log.info("KD step %d: val %s (best step %s, patience %d/%d)", step, summary(val), state.best_step,
                 state.patience_counter, settings.patience)
        if state.patience_counter > settings.patience:
            state.stopped = "patience"
        elif step >= settings.num_kd_steps:
            state.stopped = "max_steps"
        record["wall_s"] = record["teacher_s"] + (fit_info or {}).get("wall_s", 0.0) + time.perf_counter() - started
        state.steps.append(record)
        state.step, state.phase, state.pending, state.last_report = step + 1, "teacher", None, report
        self.save()
        self.loggers.log_metrics(kd_metrics(record))
        self.loggers.log_table(PER_CLASS_F1_TABLE, pd.DataFrame(
            [{"step": r["step"], "label": k, "f1": v} for r in state.steps for k, v in r["per_class_f1"].items()]))

    # -- between fits -------------------------------------------------------------------------
    def history_proba(self) -> tuple[np.ndarray, str, int]:
        """The student's probabilities on the history, their source (``pgkd.mining``) and the
        number of errors the student's own predictions make in the mining scope."""
        proba = self.student.predict_proba(self.history.text)
        scope = in_scope(self.history, self.settings.mining_scope)
        errors = count_errors(self.history[scope], proba[scope], self.data.taxonomy)
        if self.settings.mining == "train":
            return proba, "train", errors
        if self.settings.mining == "auto" and errors >= self.settings.n_misclassified + self.settings.hard_negatives_asked:
            return proba, "train", errors
        return self.out_of_fold_proba(), "oof", errors

    def out_of_fold_proba(self) -> np.ndarray:
        """k-fold predictions on the history, each fold by a fresh model (never one that saw it),
        folds seeded by the KD step; the loop's own model is restored afterwards."""
        student = self.student
        current = {k: v.clone() for k, v in student.module.state_dict().items()}
        val_texts, val_ids = self.validation_data()
        warm_start, student.warm_start = student.warm_start, False

        def fit_predict(train: pd.DataFrame, held: pd.DataFrame) -> np.ndarray:
            student.fit(train.text, self.data.ids(train.label), val_texts, val_ids, name="oof")
            return student.predict_proba(held.text)

        try:
            return out_of_fold_proba(self.history, self.settings.oof_folds, self.seed * 1_000 + self.state.step,
                                     fit_predict, len(self.data.taxonomy))
        finally:
            student.warm_start = warm_start
            student.module.load_state_dict(current)

    def run_teacher_step(self) -> None:
        """Generate the samples for the next fit; a budget stop or an exhausted teacher ends the run."""
        step = self.state.step
        proba, source, training_errors = self.history_proba()
        try:
            new, counters = teacher_step(step, self.history, proba, source, self.state.last_report, self.ctx,
                                         training_errors)
        except BudgetExceeded as error:
            log.warning("stopping: %s", error)
            self.state.stopped = "budget"
            self.save()
            return
        if counters["accepted"] == 0:  # refitting the same data would only burn patience
            log.warning("stopping: KD step %d accepted no sample in %d calls (rejected %s)", step,
                        counters["calls"], counters["rejected"] or "none")
            self.state.stopped, self.state.exhausted_step = "teacher_exhausted", counters
            self.save()
            return
        self.history = pd.concat([self.history, new], ignore_index=True)
        generated = self.history[self.history.origin == "teacher"]
        self.loggers.log_table(GENERATED_SAMPLES_TABLE, generated[["text", "label", "step", "request_index"]])
        self.state.pending, self.state.phase = counters, "fit"
        self.save()

    def save(self) -> None:
        """History first, then the state that says how much of it is valid (atomic writes)."""
        tmp = self.history_path.with_suffix(".csv.tmp")
        self.history.to_csv(tmp, index=False)
        tmp.replace(self.history_path)
        self.state.history_len = len(self.history)
        self.state.save(self.state_path)

    # -- the end ----------------------------------------------------------------------------
    def finish(self) -> dict:
        """Restore the best model, test it, and return the run's metrics."""
        state = self.state
        self.student.load(self.run_dir / "best_model.pt")  # the kept model: tested, then saved as the run's model
        test = state.model_0["test"] if state.best_step == 0 else self.evaluate(self.data.test)
        totals = self.ctx.teacher.ledger.totals()
        result = {
            "val": state.best_val, "test": test, "best_step": state.best_step, "stopped": state.stopped,
            "model_0": state.model_0, "steps": state.steps, "teacher": {
                "name": self.ctx.teacher.name, "model": self.ctx.teacher.model, **totals},
            "samples": {"annotated": int((self.history.origin == "annotated").sum()),
                        "generated": int((self.history.origin == "teacher").sum())},
            "settings": asdict(self.settings),
        }
        if state.exhausted_step:
            result["exhausted_step"] = state.exhausted_step
        result["summary"] = summarize(result, self.history, self.settings)
        log.info("PGKD done (%s): model_0 test %s -> best (step %s) test %s", state.stopped,
                 summary(state.model_0["test"]), state.best_step, summary(test))
        return result


def summarize(result: dict, history: pd.DataFrame, settings: PGKDSettings) -> dict:
    """Did PGKD help? Test Δ of the kept model vs model_0, the kept step, warnings (model_0
    kept, steps short of samples, empty mined sections) and, per class, the samples generated
    beside the validation F1 the teacher was shown (did it write for the weak classes?)."""
    before, after = result["model_0"]["test"], result["test"]
    steps = result["steps"]
    warnings = []
    if result["best_step"] == 0:
        warnings.append("model_0 was kept: no KD step lowered the validation loss, so the run returns the "
                        "student trained on the annotated data alone")
    for step in steps[1:] + ([{"step": len(steps), **result["exhausted_step"]}] if result.get("exhausted_step") else []):
        if step["accepted"] < settings.samples_per_step:
            warnings.append(f"step {step['step']}: {step['accepted']} of {settings.samples_per_step} samples accepted "
                            f"(rejected: {step.get('rejected') or 'none'})")
        empty = [name for name, asked, key in (("misclassified", settings.n_misclassified, "prompt_misclassified"),
                                               ("hard negatives", settings.hard_negatives_asked, "prompt_hard_negatives"))
                 if asked and step.get(key) == 0]
        if empty:
            warnings.append(f"step {step['step']}: no {' and no '.join(empty)} in the prompt (mined from "
                            f"{step.get('mining')}: {step.get('mined_errors')} errors)")
    generated = history[history.origin == "teacher"]
    shown_f1 = {s["step"] + 1: s["per_class_f1"] for s in steps}  # step k's prompt reports fit k-1
    per_class = pd.DataFrame({
        "label": list(before["per_class"]),
        "val_f1_model_0": [result["model_0"]["val"]["per_class"][c]["f1"] for c in before["per_class"]],
        "val_f1_kept": [(result["val"] or {}).get("per_class", {}).get(c, {}).get("f1") for c in before["per_class"]],
    })
    per_class["generated"] = per_class.label.map(generated.label.value_counts()).fillna(0).astype(int)
    targeting = None
    if len(generated) and settings.use_validation_report:
        # every (step, class) pair: the F1 the teacher was shown vs the samples it wrote for that class
        counts = {(int(step), label): n for (step, label), n in generated.groupby(["step", "label"]).size().items()}
        asked = {step for step, _ in counts}
        pairs = [(f1, counts.get((step, label), 0)) for step, report in shown_f1.items() if step in asked
                 for label, f1 in report.items()]
        frame = pd.DataFrame(pairs, columns=["shown_f1", "generated"])
        if frame.shown_f1.nunique() > 1 and frame.generated.nunique() > 1:
            targeting = float(frame.shown_f1.corr(frame.generated, method="spearman"))
    return {
        "kept_step": result["best_step"], "stopped": result["stopped"],
        **{f"test_{metric}": {"model_0": before[metric], "kept": after[metric], "delta": after[metric] - before[metric]}
           for metric in ("accuracy", "macro_f1")},
        "warnings": warnings,
        "generated_vs_shown_f1_spearman": targeting,
        "per_class": per_class.sort_values(["val_f1_model_0", "label"]).to_dict("records"),
    }


class PGKDCallback(pl.Callback):
    """The Lightning side of the loop: after every fit, hand the fitted model to the KD loop,
    which evaluates it, keeps the best one and decides the early stop."""

    def __init__(self, loop: KDLoop):
        self.loop = loop

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.loop.after_fit(self.loop.student.fit_info(trainer))


def run_pgkd(data: TextDataset, student: Student, teacher: TeacherClient, settings: PGKDSettings,
             prompt_cfg: Mapping, run_dir: str | Path, loggers: RunLoggers | None = None, seed: int = 0,
             run_fingerprint: str = "") -> dict:
    """Algorithm 1: model_0, then KD steps until the callback says stop; returns the metrics."""
    loggers = loggers or RunLoggers({})
    loop = KDLoop(data, student, teacher, settings, prompt_cfg, run_dir, loggers, seed, run_fingerprint)
    student.seed = seed  # every fit starts from the same initialisation: steps differ by data only
    callback = PGKDCallback(loop)
    while not loop.should_stop:
        if loop.teacher_due:
            loop.run_teacher_step()
            continue
        texts, labels = loop.training_data()
        student.fit(texts, labels, *loop.validation_data(), callbacks=[callback],
                    logger=loggers.for_fit(f"step_{loop.state.step:02d}"), name=f"step_{loop.state.step:02d}")
    return loop.finish()


def check_supported(cfg: DictConfig) -> None:
    """Fail at start, not in a hang: the teacher step runs in one process."""
    strategy, devices = str(cfg.trainer.get("strategy", "")), cfg.trainer.get("devices", 1)
    if "ddp" in strategy or (isinstance(devices, int) and devices > 1):
        raise PGKDConfigError(
            f"PGKD with trainer={cfg.trainer.get('strategy')} on {devices} devices is not supported: the teacher "
            "step and the early-stop decision run in one process. Use trainer=gpu (one device) for PGKD; "
            "the baseline (pgkd=off) runs with trainer=ddp.")


def run_pgkd_from_config(cfg: DictConfig, data: TextDataset, student: Student, loggers: RunLoggers,
                         run_dir: Path) -> dict:
    """``run_pgkd`` with the teacher, settings and prompt of a composed config."""
    check_supported(cfg)
    settings = PGKDSettings.from_config(OmegaConf.to_container(cfg.pgkd, resolve=True))
    teacher = build_teacher(cfg.teacher, run_dir / "teacher_ledger.jsonl", dataset=data)
    prompt_cfg = OmegaConf.to_container(cfg.prompt, resolve=True)
    run_fingerprint = lineage_hash(cfg)
    if not cfg.get("force", False) and not (run_dir / "pgkd_state.json").exists():
        continue_shorter_run(run_dir, run_fingerprint, settings.num_kd_steps)
    started = time.perf_counter()
    result = run_pgkd(data, student, teacher, settings, prompt_cfg, run_dir, loggers, int(cfg.seed), run_fingerprint)
    result["timing"] = {"pgkd_s": time.perf_counter() - started}
    if (run_dir / "continued_from.json").exists():
        result["continued_from"] = read_json(run_dir / "continued_from.json")
    return result


# What a longer run takes over from a finished shorter one of the same lineage.
CONTINUED_ARTIFACTS = ("pgkd_state.json", "history.csv", "steps", "teacher_ledger.jsonl", "best_model.pt",
                       "last_model.pt")


def continue_shorter_run(run_dir: Path, lineage: str, num_kd_steps: int) -> Path | None:
    """Seed ``run_dir`` with the longest finished sibling run (same parent folder, same lineage
    hash, stopped by ``max_steps`` after fewer than ``num_kd_steps`` steps): its steps are not
    asked again. A sibling with as many steps is the same run, not a shorter one: a run dir
    chosen by hand starts afresh beside it. Returns the sibling used, if any."""
    best, best_steps = None, -1
    for state_path in sorted(run_dir.parent.glob("*/pgkd_state.json")):
        sibling = state_path.parent
        if sibling == run_dir or not (sibling / "last_model.pt").exists():
            continue
        state = read_json(state_path)
        done = state.get("step", 0) - 1
        if (state.get("fingerprint") == lineage and state.get("stopped") == "max_steps"
                and done < num_kd_steps and done > best_steps):
            best, best_steps = sibling, done
    if best is None:
        return None
    log.info("continuing the %d-step run %s in %s", best_steps, best, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in CONTINUED_ARTIFACTS:
        source = best / name
        if source.is_dir():
            shutil.copytree(source, run_dir / name, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, run_dir / name)
    write_json(run_dir / "continued_from.json", {"run_dir": best.name, "kd_steps": best_steps})
    return best
