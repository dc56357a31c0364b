"""The LLM zero-shot baseline (paper Appendix A.2): the teacher classifies the test split."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pgkd.config import write_json
from pgkd.data import TextDataset
from pgkd.experiment import open_run
from pgkd.metrics import classification_metrics, summary
from pgkd.parsing import LabelMap, as_items, extract_json
from pgkd.progress import progress
from pgkd.prompt import build_zero_shot_messages
from pgkd.teacher import BudgetExceeded, Request, SamplingParams, TeacherClient, build_teacher

log = logging.getLogger(__name__)


def answer_schema(taxonomy) -> dict:
    # the name comes first: constrained decoding writes fields in schema order, and a small model
    # that must commit to an index first copies the prompt's example index
    return {"type": "object", "properties": {"class_names": {"type": "string", "enum": list(taxonomy)},
                                             "class_label": {"type": "integer"}},
            "required": ["class_names", "class_label"]}


def parse_answer(reply: str, labels: LabelMap) -> str | None:
    """The class an answer names: a JSON object (``class_names`` / ``label`` / index), else the
    bare reply if it is a class name. None when unusable (counted wrong)."""
    items = as_items(extract_json(reply)) or []
    for item in items[:1]:
        if isinstance(item, dict):
            label, _ = labels.from_item(item)
            if label is not None:
                return label
    return labels(reply.strip().strip('"').strip())


def run_zero_shot(data: TextDataset, teacher: TeacherClient, prompt_cfg: Mapping, run_dir: str | Path,
                  limit: int | None = None, seed: int = 0, max_tokens: int = 64, chunk: int = 64) -> dict:
    """Classify the test split (or a seeded ``limit`` subsample); resumable via predictions.jsonl
    (and the teacher cache). Unparseable / out-of-taxonomy answers count as wrong and are reported."""
    run_dir = Path(run_dir)
    test = data.test if not limit or limit >= len(data.test) else data.test.sample(n=limit, random_state=seed)
    labels = LabelMap(data.taxonomy)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, json_schema=answer_schema(data.taxonomy))
    predictions_path = run_dir / "predictions.jsonl"
    done = {}
    if predictions_path.exists():
        done = {row["index"]: row for row in map(json.loads, predictions_path.read_text().splitlines())}
        log.info("zero-shot: resuming with %d of %d answers", len(done), len(test))
    todo = [i for i in range(len(test)) if i not in done]
    started = time.perf_counter()
    stopped = None
    with predictions_path.open("a") as sink, progress(len(todo), f"zero-shot {teacher.name}", "text") as bar:
        for offset in range(0, len(todo), chunk):
            batch = todo[offset:offset + chunk]
            requests = [Request(build_zero_shot_messages(prompt_cfg, data.taxonomy, test.text.iloc[i]), params, 0,
                                "zero_shot") for i in batch]
            for i, reply in zip(batch, teacher.ask_many(requests, return_exceptions=True)):
                if isinstance(reply, BudgetExceeded):
                    stopped = "budget"
                    continue
                if isinstance(reply, Exception):
                    raise reply
                row = {"index": i, "gold": test.label.iloc[i], "predicted": parse_answer(reply.text, labels),
                       "reply": reply.text[:500], "cache_hit": reply.cache_hit}
                done[i] = row
                sink.write(json.dumps(row) + "\n")
            sink.flush()
            bar.update(len(batch))
            if stopped:
                log.warning("zero-shot: budget reached after %d of %d answers; re-run with a larger "
                            "teacher.budget_usd to go on", len(done), len(test))
                break
    wall = time.perf_counter() - started
    rows = [done[i] for i in range(len(test)) if i in done]
    mapping = data.label_to_id
    gold = np.array([mapping[r["gold"]] for r in rows])
    pred = np.array([mapping[r["predicted"]] if r["predicted"] else -1 for r in rows])
    metrics = classification_metrics(gold, pred, data.taxonomy)
    invalid = float((pred < 0).mean())
    totals = teacher.ledger.totals()
    calls = max(1, totals["calls"] - totals["cache_hits"])
    per_64 = {"cost_usd": totals["cost_usd"] / calls * 64, "sequential_latency_s": totals["latency_s"] / calls * 64,
              "input_tokens": totals["input_tokens"] / max(1, totals["calls"]) * 64,
              "output_tokens": totals["output_tokens"] / max(1, totals["calls"]) * 64}
    log.info("zero-shot %s on %d texts: %s, invalid %.1f%%", teacher.name, len(rows), summary(metrics), 100 * invalid)
    return {"test": metrics, "invalid_rate": invalid, "limit": limit, "n_evaluated": len(rows), "stopped": stopped,
            "teacher": {"name": teacher.name, "model": teacher.model, **totals}, "per_batch_of_64": per_64,
            "timing": {"wall_s": wall}}


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Hydra entry (``scripts/zero_shot.py``): the composed ``zero_shot`` config in, metrics.json out."""
    run_dir = Path(run_dir or cfg.paths.output_dir)
    header = {"run_name": cfg.run_name, "dataset": cfg.dataset.name, "method": f"zero_shot-{cfg.teacher.name}",
              "seed": int(cfg.seed), "n_annotated": int(cfg.dataset.n_annotated)}
    data, done = open_run(cfg, run_dir, header)
    if done is not None:
        return done
    teacher = build_teacher(cfg.teacher, run_dir / "teacher_ledger.jsonl", dataset=data)
    result = run_zero_shot(data, teacher, OmegaConf.to_container(cfg.prompt, resolve=True), run_dir,
                           cfg.get("limit"), int(cfg.seed), int(cfg.get("max_tokens", 64)))
    result = {**header, "n_classes": len(data.taxonomy), **result, "status": "finished"}
    write_json(run_dir / "metrics.json", result)
    return result
