"""The PGKD loop (paper Algorithm 1).

``run_pgkd`` reads top to bottom: fit the student on the history until the callback says stop.
``PGKDCallback.on_fit_end`` does the rest after every fit: evaluate on validation, keep the best
model, decide the early stop, and — if going on — mine the history, prompt the teacher, validate
its samples and add them to the history. Its state lives in the run dir, so a killed run resumes
after its last finished step.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from pgkd.config import read_json, write_json
from pgkd.identity import lineage_hash
from pgkd.data import TextDataset
from pgkd.metrics import summary
from pgkd.mining import mine, out_of_fold_proba
from pgkd.parsing import LabelMap, SplitFirewall, normalize, parse_samples
from pgkd.prompt import build_pgkd_messages, generation_schema
from pgkd.students import Student
from pgkd.teacher import BudgetExceeded, SamplingParams, TeacherClient, build_teacher
from pgkd.tracking import RunLoggers

log = logging.getLogger(__name__)
HISTORY_COLUMNS = ["text", "label", "step", "origin", "teacher_model", "prompt_hash", "request_index",
                   "parse_status", "answers"]


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
    mining: str = "train"
    oof_folds: int = 5
    max_text_chars: int = 2000
    near_duplicate_threshold: float = 0.8
    prompt_example_chars: int = 400
    report_max_classes: int | None = None
    reject_history_copies: bool = True
    temperature: float = 1.0
    max_tokens: int = 4096

    @classmethod
    def from_config(cls, cfg: Mapping) -> "PGKDSettings":
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


class PGKDCallback(pl.Callback):
    """Runs the teacher step after each fit and owns the KD early-stop decision."""

    def __init__(self, data: TextDataset, student: Student, teacher: TeacherClient, settings: PGKDSettings,
                 prompt_cfg: Mapping, run_dir: str | Path, loggers: RunLoggers | None = None, seed: int = 0,
                 run_fingerprint: str = ""):
        self.data, self.student, self.teacher = data, student, teacher
        self.settings, self.prompt_cfg, self.seed = settings, prompt_cfg, seed
        self.run_dir = Path(run_dir)
        self.loggers = loggers or RunLoggers({})
        self.labels = LabelMap(data.taxonomy)
        self.firewall = SplitFirewall(list(data.val.text) + list(data.test.text), settings.near_duplicate_threshold)
        self.state_path = self.run_dir / "pgkd_state.json"
        self.history_path = self.run_dir / "history.csv"
        if self.state_path.exists():
            self.state = read_json(self.state_path)
            if run_fingerprint and self.state.get("fingerprint") != run_fingerprint:
                raise RuntimeError(
                    f"{self.run_dir} holds a PGKD run with another config (lineage hash "
                    f"{self.state.get('fingerprint')} != {run_fingerprint}); use another run dir or force=true"
                )
            self.history = read_history(self.history_path).head(self.state["history_len"])
            log.info("resuming %s at KD step %d (history %d rows)", self.run_dir, self.state["step"], len(self.history))
            if self.state["stopped"] == "budget":  # re-run (with a larger budget): ask again, then go on
                self.state["stopped"] = None
            last_step = self.state["step"] - 1
            if self.state["stopped"] == "max_steps" and settings.num_kd_steps != last_step:
                if settings.num_kd_steps < last_step:
                    raise RuntimeError(
                        f"{self.run_dir} already holds {last_step} KD steps, more than num_kd_steps="
                        f"{settings.num_kd_steps}; use another run dir or force=true")
                log.info("continuing %s: %d -> %d KD steps", self.run_dir, last_step, settings.num_kd_steps)
                self.state["stopped"] = None  # a longer run: the next teacher step first, then go on
        else:
            self.state = {"fingerprint": run_fingerprint, "step": 0, "best_step": None, "best_val_loss": None,
                          "patience_counter": 0, "stopped": None, "steps": [], "pending": None,
                          "history_len": len(data.train), "model_0": None}
            self.history = pd.DataFrame({"text": data.train.text, "label": data.train.label, "step": 0,
                                         "origin": "annotated", "teacher_model": "", "prompt_hash": "",
                                         "request_index": -1, "parse_status": "", "answers": ""})

    # -- read by the outer loop -------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def should_stop(self) -> bool:
        return self.state["stopped"] is not None

    def training_data(self) -> tuple[list[str], list[int]]:
        return list(self.history.text), self.data.ids(self.history.label)

    # -- the hook -----------------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.after_fit(self.student.fit_info(trainer))

    def after_fit(self, fit_info: dict | None = None) -> None:
        """Evaluate the model just fitted, update best/patience, then run the teacher step."""
        started = time.perf_counter()
        step, data, settings = self.step, self.data, self.settings
        val = self.student.evaluate(data.val.text, data.ids(data.val.label), data.taxonomy)
        record = {"step": step, "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                  "val_macro_f1": val["macro_f1"], "val_weighted_f1": val["weighted_f1"],
                  "per_class_f1": {k: v["f1"] for k, v in val["per_class"].items()},
                  "history_size": len(self.history), "fit": fit_info or {},
                  **(self.state["pending"] or {"accepted": 0, "rejected": {}, "calls": 0, "input_tokens": 0,
                                               "output_tokens": 0, "cost_usd": 0.0, "teacher_s": 0.0})}
        if step == 0:
            test = self.student.evaluate(data.test.text, data.ids(data.test.label), data.taxonomy)
            self.state["model_0"] = {"val": val, "test": test}
            log.info("model_0 val: %s | test: %s", summary(val), summary(test))
        best = self.state["best_val_loss"]
        if best is None or val["loss"] < best:
            self.state.update(best_val_loss=val["loss"], best_step=step, patience_counter=0, best_val=val)
            self.student.save(self.run_dir / "best_model.pt")
        else:
            self.state["patience_counter"] += 1
        log.info("KD step %d: val %s (best step %s, patience %d/%d)", step, summary(val),
                 self.state["best_step"], self.state["patience_counter"], settings.patience)
        if self.state["patience_counter"] > settings.patience:
            self.state["stopped"] = "patience"
        elif step >= settings.num_kd_steps:
            self.state["stopped"] = "max_steps"
            self.student.save(self.run_dir / "last_model.pt")  # what a longer run mines from
        self.state["pending"] = None
        self.state["last_val"] = val
        # a step's wall time: generating its samples, then fitting and evaluating on them
        record["wall_s"] = (record.get("teacher_s", 0.0) + (fit_info or {}).get("wall_s", 0.0)
                            + time.perf_counter() - started)
        if not self.should_stop:
            if self.student.warm_start:
                self.student.save(self.run_dir / "last_model.pt")
            self.ask_teacher(step + 1)
        self.state["steps"].append(record)
        self.state["step"] = step + 1
        self.save_state()
        self.loggers.log_metrics({f"kd/{k}": v for k, v in record.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
        self.loggers.log_table("kd/per_class_f1", pd.DataFrame(
            [{"step": r["step"], "label": k, "f1": v} for r in self.state["steps"] for k, v in r["per_class_f1"].items()]))

    def ask_teacher(self, step: int) -> None:
        """The teacher step for ``step``; a budget stop leaves the run resumable at this point."""
        try:
            counters = self.teacher_step(step, self.state["last_val"])
        except BudgetExceeded as error:
            log.warning("stopping: %s", error)
            self.state["stopped"] = "budget"
            self.student.save(self.run_dir / "last_model.pt")  # the model to mine from on resume
            return
        if counters["accepted"] == 0:
            # refitting the same data would only burn patience
            log.warning("stopping: KD step %d accepted no sample in %d calls (rejected %s)", step,
                        counters["calls"], counters["rejected"] or "none")
            self.state.update(stopped="teacher_exhausted", exhausted_step=counters)
            return
        self.state["pending"] = counters

    @property
    def awaits_teacher(self) -> bool:
        """Resumed after a budget stop: the samples for the next fit were never generated."""
        return self.step > 0 and not self.should_stop and self.state["pending"] is None

    def teacher_step(self, step: int, val: dict) -> dict:
        """Mine, prompt, parse and add up to ``samples_per_step`` new samples; return the counters."""
        settings, data = self.settings, self.data
        started = time.perf_counter()
        rng = np.random.default_rng([self.seed, step])
        proba, source = self.history_proba()
        allowed = lambda text: self.firewall.reason(text) is None  # noqa: E731
        quotable = self.history[[allowed(t) for t in self.history.text]]
        n_hard = settings.n_hard_negatives if settings.use_hard_negatives else 0
        annotated = quotable[quotable.origin == "annotated"]
        quotable_proba = proba[[allowed(t) for t in self.history.text]]
        step_dir = self.run_dir / "steps" / f"step_{step:02d}"
        step_dir.mkdir(parents=True, exist_ok=True)
        seen = set(self.history.text.map(normalize))
        near_history = (SplitFirewall(self.history.text, settings.near_duplicate_threshold, prefix="history")
                        if settings.reject_history_copies else None)
        accepted: list[dict] = []
        counters = {"accepted": 0, "rejected": {}, "calls": 0, "input_tokens": 0, "output_tokens": 0,
                    "cost_usd": 0.0, "mining": source,
                    "training_errors": int((proba.argmax(1) != np.asarray(data.ids(self.history.label))).sum())}
        mined_per_call: list[dict] = []
        for call in range(settings.max_calls_per_step):
            missing = settings.samples_per_step - len(accepted)
            if missing <= 0:
                break
            n = min(settings.samples_per_call, missing)
            # every call (re-asks too) draws its own few-shot and mined examples: distinct prompts
            mined = mine(quotable, quotable_proba, data.taxonomy, settings.n_correct, settings.n_misclassified,
                         n_hard, rng, source)
            fewshot = annotated.iloc[np.sort(rng.choice(len(annotated), min(settings.n_fewshot, len(annotated)),
                                                        replace=False))]
            messages, sections = build_pgkd_messages(
                self.prompt_cfg, taxonomy=data.taxonomy, fewshot=fewshot, n_samples=n,
                report=val if settings.use_validation_report else None, correct=mined.correct,
                misclassified=mined.misclassified,
                hard_negatives=mined.hard_negatives if settings.use_hard_negatives else None,
                max_chars=settings.prompt_example_chars, report_max_classes=settings.report_max_classes)
            mined_per_call.append({k: getattr(mined, k).to_dict("records")
                                   for k in ("correct", "misclassified", "hard_negatives")})
            prompt_text = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
            prompt_hash = hashlib.sha256(prompt_text.encode()).hexdigest()[:16]
            (step_dir / f"prompt_{call:02d}.txt").write_text(prompt_text)
            params = SamplingParams(temperature=settings.temperature, max_tokens=settings.max_tokens,
                                    seed=self.seed * 100_003 + step * 1_009 + call,
                                    json_schema=generation_schema(data.taxonomy, n))
            reply = self.teacher.ask(messages, params, request_index=call, purpose=f"pgkd_step_{step}",
                                     accept=lambda text: parse_samples(text, self.labels).parsed)
            (step_dir / f"reply_{call:02d}.txt").write_text(reply.text)
            result = parse_samples(reply.text, self.labels, seen=seen, firewall=self.firewall,
                                   history=near_history, max_chars=settings.max_text_chars)
            for reason, count in result.rejected.items():
                counters["rejected"][reason] = counters["rejected"].get(reason, 0) + count
            for sample in result.samples[:missing]:
                accepted.append({"text": sample["text"], "label": sample["label"], "step": step,
                                 "origin": "teacher", "teacher_model": reply.model or self.teacher.model,
                                 "prompt_hash": prompt_hash, "request_index": call, "parse_status": "ok",
                                 "answers": sample.get("target_class") or sample.get("addresses") or ""})
            counters["calls"] += 1
            counters["input_tokens"] += reply.input_tokens
            counters["output_tokens"] += reply.output_tokens
            counters["cost_usd"] += reply.cost_usd
        counters.update(accepted=len(accepted), sections=sections, teacher_s=time.perf_counter() - started)
        first_mined = mined_per_call[0] if mined_per_call else {}
        new = pd.DataFrame(accepted, columns=HISTORY_COLUMNS)
        new.to_csv(step_dir / "samples.csv", index=False)
        write_json(step_dir / "report.json", {"validation": val, "counters": counters,
                                              "mined": first_mined, "mined_per_call": mined_per_call})
        self.history = pd.concat([self.history, new], ignore_index=True)
        self.loggers.log_table(f"kd/samples_step_{step:02d}", new[["text", "label", "step", "request_index"]])
        log.info("KD step %d: %d samples accepted, rejected %s, %d calls", step, len(accepted),
                 counters["rejected"] or "none", counters["calls"])
        if len(accepted) < settings.samples_per_step:
            log.warning("KD step %d: only %d of %d samples after %d calls", step, len(accepted),
                        settings.samples_per_step, counters["calls"])
        return counters

    def history_proba(self) -> tuple[np.ndarray, str]:
        """Student probabilities on the history: its own predictions, or out-of-fold ones."""
        if self.settings.mining != "oof":
            return self.student.predict_proba(self.history.text), "train"
        current = {k: v.clone() for k, v in self.student.module.state_dict().items()}
        val_texts, val_ids = self.data.val.text, self.data.ids(self.data.val.label)
        warm_start, self.student.warm_start = self.student.warm_start, False  # a fresh model per fold

        def fit_predict(train: pd.DataFrame, held: pd.DataFrame) -> np.ndarray:
            self.student.fit(train.text, self.data.ids(train.label), val_texts, val_ids, name="oof")
            return self.student.predict_proba(held.text)

        try:
            proba = out_of_fold_proba(self.history, self.settings.oof_folds, self.seed + self.step,
                                      fit_predict, len(self.data.taxonomy))
        finally:
            self.student.warm_start = warm_start
            self.student.module.load_state_dict(current)
        return proba, "oof"

    def save_state(self) -> None:
        """History first, then the state that says how much of it is valid (atomic writes)."""
        tmp = self.history_path.with_suffix(".csv.tmp")
        self.history.to_csv(tmp, index=False)
        tmp.replace(self.history_path)
        self.state["history_len"] = len(self.history)
        write_json(self.state_path, self.state)

    def finish(self) -> dict:
        """Restore the best model, test it, and return the run's metrics."""
        data, state = self.data, self.state
        best_step = state["best_step"]
        if best_step == 0:
            test = state["model_0"]["test"]
        else:
            self.student.load(self.run_dir / "best_model.pt")
            test = self.student.evaluate(data.test.text, data.ids(data.test.label), data.taxonomy)
        totals = self.teacher.ledger.totals()
        result = {
            "val": state["best_val"], "test": test, "best_step": best_step, "stopped": state["stopped"],
            "model_0": state["model_0"], "steps": state["steps"], "teacher": {
                "name": self.teacher.name, "model": self.teacher.model, **totals},
            "samples": {"annotated": int((self.history.origin == "annotated").sum()),
                        "generated": int((self.history.origin == "teacher").sum())},
            "settings": asdict(self.settings),
        }
        m0 = state["model_0"]["test"]
        log.info("PGKD done (%s): model_0 test %s -> best (step %s) test %s", state["stopped"], summary(m0),
                 best_step, summary(test))
        return result


def run_pgkd(data: TextDataset, student: Student, teacher: TeacherClient, settings: PGKDSettings,
             prompt_cfg: Mapping, run_dir: str | Path, loggers: RunLoggers | None = None, seed: int = 0,
             run_fingerprint: str = "") -> dict:
    """Algorithm 1: model_0, then KD steps until the callback stops; returns the metrics."""
    loggers = loggers or RunLoggers({})
    callback = PGKDCallback(data, student, teacher, settings, prompt_cfg, run_dir, loggers, seed, run_fingerprint)
    if callback.step > 0 and student.warm_start and (Path(run_dir) / "last_model.pt").exists():
        student.load(Path(run_dir) / "last_model.pt")
    student.seed = seed  # every fit starts from the same initialisation: steps differ by data only
    if callback.awaits_teacher:
        student.load(Path(run_dir) / "last_model.pt")
        callback.ask_teacher(callback.step)
        callback.save_state()
    while not callback.should_stop:
        texts, labels = callback.training_data()
        started = time.perf_counter()
        student.fit(texts, labels, data.val.text, data.ids(data.val.label), callbacks=[callback],
                    logger=loggers.for_fit(f"step_{callback.step:02d}"), name=f"step_{callback.step:02d}")
        log.debug("fit took %.1fs", time.perf_counter() - started)
    return callback.finish()


def run_pgkd_from_config(cfg: DictConfig, data: TextDataset, student: Student, loggers: RunLoggers,
                         run_dir: Path) -> dict:
    """``run_pgkd`` with the teacher, settings and prompt of a composed config."""
    teacher = build_teacher(cfg.teacher, run_dir / "teacher_ledger.jsonl", dataset=data)
    settings = PGKDSettings.from_config(OmegaConf.to_container(cfg.pgkd, resolve=True))
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
