"""Persistence shared by all backends: the response cache (SQLite, WAL, safe across processes)
and the per-run cost ledger (JSONL)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from pgkd.sqlite_store import connect, open_shared_db
from pgkd.teacher.base import Message, Reply, SamplingParams


def cache_key(backend: str, model: str, messages: Iterable[Message], params: SamplingParams,
              request_index: int, settings: dict | None = None) -> str:
    """Everything that determines a reply: backend kind, model, the backend's output settings,
    messages, sampling params; ``request_index`` lets the same prompt be asked on purpose more
    than once and get distinct samples."""
    payload = {
        "backend": backend, "model": model, "params": params.as_dict(), "request_index": request_index,
        "messages": [[m.role, m.content] for m in messages],
    }
    if settings:
        payload["settings"] = settings
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    """Successful replies only. Many processes (parallel Hydra jobs) may read and write at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        open_shared_db(self.path, "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY,"
                       " backend TEXT, model TEXT, text TEXT, input_tokens INTEGER,"
                       " output_tokens INTEGER, created REAL)")

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def get(self, key: str) -> Reply | None:
        with self._connect() as db:
            row = db.execute("SELECT backend, model, text, input_tokens, output_tokens FROM replies"
                             " WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        backend, model, text, tokens_in, tokens_out = row
        return Reply(text=text, input_tokens=tokens_in, output_tokens=tokens_out, model=model,
                     backend=backend, cache_hit=True)

    def put(self, key: str, reply: Reply) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key, reply.backend, reply.model, reply.text, reply.input_tokens,
                        reply.output_tokens, time.time()))

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]


class CostLedger:
    """Append-only JSONL of every call (hit or miss) of a run; totals and spend derive from it,
    so a resumed run keeps counting against the same budget."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._spent = sum(e.get("cost_usd", 0.0) for e in self.entries())

    def append(self, entry: dict) -> None:
        line = json.dumps({"time": time.time(), **entry}) + "\n"
        with self._lock, self.path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line)
            fcntl.flock(handle, fcntl.LOCK_UN)
            self._spent += entry.get("cost_usd", 0.0)

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def totals(self) -> dict:
        entries = self.entries()
        calls = [e for e in entries if e.get("status") in ("ok", "rejected")]
        return {
            "calls": len(calls),
            "cache_hits": sum(1 for e in calls if e.get("cache_hit")),
            "errors": sum(1 for e in entries if e.get("status") == "error"),
            "input_tokens": sum(e.get("input_tokens", 0) for e in calls),
            "output_tokens": sum(e.get("output_tokens", 0) for e in calls),
            "cost_usd": round(sum(e.get("cost_usd", 0.0) for e in entries), 6),
            "latency_s": round(sum(e.get("latency_s", 0.0) for e in calls if not e.get("cache_hit")), 3),
        }

    def spent(self) -> float:
        """USD recorded so far, this process and earlier ones on the same ledger."""
        return self._spent
