"""Transcripts: every teacher request of a run with its reply, compressed, so a committed result
re-creates with ``teacher=replay`` at $0 on any machine.

A transcript is gzipped JSON lines, one per answered request: the cache key, the teacher's
identity, the purpose (``pgkd_step_3``, ``zero_shot``), the prompt as it was sent (from the run's
``steps/`` folder where there is one) and the reply with its token counts.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable

from pgkd.teacher.base import Reply
from pgkd.teacher.store import CostLedger, ResponseCache


def _prompt_of(run_dir: Path, entry: dict) -> str | None:
    purpose = entry.get("purpose", "")
    if not purpose.startswith("pgkd_step_"):
        return None
    path = run_dir / "steps" / f"step_{int(purpose.rsplit('_', 1)[1]):02d}" / f"prompt_{entry['request_index']:02d}.txt"
    return path.read_text() if path.exists() else None


def export_transcript(run_dir: str | Path, cache: ResponseCache, out_path: str | Path) -> int:
    """Write the transcript of ``run_dir`` (its ledger's answered requests, replies from
    ``cache``); returns the number of requests written. Requests the cache lacks are skipped."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    entries = [e for e in CostLedger(run_dir / "teacher_ledger.jsonl").entries()
               if e.get("status") == "ok" and e.get("key")]
    rows, seen = [], set()
    for entry in entries:
        if entry["key"] in seen or (reply := cache.get(entry["key"])) is None:
            continue
        seen.add(entry["key"])
        rows.append({"key": entry["key"], "backend": entry.get("backend"), "model": entry.get("model"),
                     "purpose": entry.get("purpose"), "request_index": entry.get("request_index"),
                     "prompt": _prompt_of(run_dir, entry), "reply": reply.text,
                     "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if not (out_path.exists() and gzip.decompress(out_path.read_bytes()) == payload):  # no churn in git
        out_path.write_bytes(gzip.compress(payload, mtime=0))
    return len(rows)


def read_transcript(path: str | Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_transcripts(paths: Iterable[str | Path], cache: ResponseCache) -> int:
    """Put the replies of transcripts into ``cache`` (then ``teacher=replay`` answers from them)."""
    count = 0
    for path in paths:
        for row in read_transcript(path):
            cache.put(row["key"], Reply(text=row["reply"], input_tokens=row.get("input_tokens", 0),
                                        output_tokens=row.get("output_tokens", 0), model=row.get("model") or "",
                                        backend=row.get("backend") or ""))
            count += 1
    return count
