"""SQLite files shared by parallel processes (Hydra multirun jobs, DDP ranks)."""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path


def open_shared_db(path: str | Path, schema: str, timeout_s: float = 120.0) -> None:
    """Create ``path`` in WAL mode with ``schema`` applied, safely when several processes do it at once.

    Switching the journal mode needs an exclusive lock, and SQLite answers a concurrent switch with
    an immediate ``database is locked`` that its busy timeout does not cover; so the first open of
    the file is serialised on a sidecar lock file. Later connections find WAL already set."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with connect(path, timeout_s) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(schema)
            db.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def connect(path: str | Path, timeout_s: float = 120.0) -> sqlite3.Connection:
    """A connection that waits up to ``timeout_s`` for writers in other processes."""
    db = sqlite3.connect(path, timeout=timeout_s)
    db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return db
