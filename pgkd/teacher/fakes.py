"""Teachers that make no network call: a deterministic scripted fake for tests and dry runs, and
a replay backend that answers only from the response cache."""

from __future__ import annotations

import hashlib
import json
import random
import re

from pgkd.teacher.base import Backend, CacheMiss, Message, Reply, SamplingParams

REPORT_ROW = re.compile(r"^(?P<label>.+?) \| (?P<p>[\d.]+) \| (?P<r>[\d.]+) \| (?P<f1>[\d.]+) \| (?P<n>\d+)$", re.M)
ASKED = re.compile(r"generate (\d+) training samples")
ZERO_SHOT = "Text-to-classify:"


class ScriptedTeacher(Backend):
    """Writes well-formed, label-valid replies from a pool of real labelled texts (the train rows
    outside the annotated sample), reading the prompt like a teacher would: the number asked for,
    and — when the validation report is present — the per-class F1: weak classes get more samples.

    ``label_noise``: share of samples given a wrong label (a teacher whose data stops helping).
    ``reply_style``: ``json`` | ``fenced`` (code fence) | ``prose`` (text around the JSON).
    ``zero_shot_accuracy``: share of zero-shot answers that are right.
    ``read_report=False``: ignore the validation report (classes drawn uniformly), the control of
    an A/B that shows reading the report is what helps.
    """

    name = "scripted"

    def __init__(self, model: str = "scripted-v1", label_noise: float = 0.0, reply_style: str = "json",
                 zero_shot_accuracy: float = 1.0, floor: float = 0.2, read_report: bool = True):
        self.model, self.label_noise, self.reply_style = model, label_noise, reply_style
        self.zero_shot_accuracy, self.floor, self.read_report = zero_shot_accuracy, floor, read_report
        self.taxonomy: list[str] = []
        self.by_label: dict[str, list[str]] = {}
        self.known: dict[str, str] = {}

    def output_settings(self) -> dict:
        return {"label_noise": self.label_noise, "reply_style": self.reply_style,
                "zero_shot_accuracy": self.zero_shot_accuracy, "floor": self.floor, "read_report": self.read_report}

    def bind_dataset(self, dataset) -> None:
        self.taxonomy = list(dataset.taxonomy)
        self.by_label = {label: [] for label in self.taxonomy}
        for text, label in zip(dataset.pool.text, dataset.pool.label):
            self.by_label[label].append(text)
        for frame in (dataset.pool, dataset.train, dataset.val, dataset.test):
            self.known.update(zip(frame.text, frame.label))

    def _rng(self, prompt: str, params: SamplingParams) -> random.Random:
        digest = hashlib.sha256(f"{params.seed}\0{prompt}".encode()).hexdigest()
        return random.Random(int(digest[:16], 16))

    def _wrap(self, payload) -> str:
        body = json.dumps(payload, ensure_ascii=False)
        if self.reply_style == "fenced":
            return f"```json\n{body}\n```"
        if self.reply_style == "prose":
            return f"Sure! Here are the samples you asked for:\n{body}\nI hope these help the student."
        return body

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        if not self.taxonomy:
            raise RuntimeError("scripted teacher: bind_dataset() was not called")
        prompt = "\n".join(m.content for m in messages)
        rng = self._rng(prompt, params)
        if ZERO_SHOT in prompt:
            text = prompt.split(ZERO_SHOT, 1)[1].strip()
            label = self.known.get(text, self.taxonomy[0])
            if rng.random() >= self.zero_shot_accuracy:
                label = rng.choice([c for c in self.taxonomy if c != label] or self.taxonomy)
            payload = {"class_label": self.taxonomy.index(label), "class_names": label}
        else:
            asked = int(m.group(1)) if (m := ASKED.search(prompt)) else 8
            report = {row["label"]: float(row["f1"]) for row in REPORT_ROW.finditer(prompt)
                      if row["label"] in self.by_label and self.read_report}
            targets = [c for c in self.taxonomy if self.by_label[c]]
            # weak classes get more samples: weight 1 - F1 (+ a floor so no class starves)
            weights = [1.0 - report.get(c, 0.0) + self.floor for c in targets] if report else None
            payload = []
            for _ in range(asked):
                label = rng.choices(targets, weights)[0]
                text = rng.choice(self.by_label[label])
                if rng.random() < self.label_noise:
                    label = rng.choice([c for c in self.taxonomy if c != label])
                payload.append({"text": text, "label": label})
        text = self._wrap(payload)
        return Reply(text=text, input_tokens=len(prompt.split()), output_tokens=len(text.split()),
                     model=self.model, backend=self.name)


class ReplayBackend(Backend):
    """Stands in for the ``original`` backend (built from its config, never called: backends
    connect or load lazily) and answers only from the cache under its identity. A cache miss
    raises CacheMiss, so a finished experiment re-runs with zero calls or fails loudly."""

    name = "replay"

    def __init__(self, original: Backend):
        self.original = original
        self.model = original.model

    @property
    def cache_identity(self) -> tuple[str, str, dict]:
        return self.original.cache_identity

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        name, model, _ = self.cache_identity
        raise CacheMiss(
            f"replay: no cached reply of {name}/{model} for this request "
            "(same prompt, sampling params, request index and backend settings); run with the real teacher first"
        )
