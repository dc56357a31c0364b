"""Run identity: which config a run's results come from, and where they were made.

A run's folder is a readable prefix plus ``config_hash(cfg)``: a short hash of the resolved
config without the keys that cannot change a result (paths, logging, threads, progress bars,
budget, the launcher). Two configs share a folder only when they would compute the same
numbers; a finished run is reused only when its stored hash matches.

``lineage_hash`` also leaves out ``pgkd.num_kd_steps``: a run stopped after N steps is the first
N steps of the same run with more, so a longer run may continue a shorter one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Dotted keys that never change a run's numbers (left out of the hash).
NON_RESULT_KEYS = (
    "hydra", "paths", "run_name", "task_name", "logger", "threads", "force", "dry_run",
    "teacher.budget_usd", "teacher.max_concurrency", "teacher.retry", "teacher.cache_path",
    "teacher.original.budget_usd", "teacher.original.max_concurrency", "teacher.original.retry",
    "teacher.original.cache_path", "teacher.transcripts", "teacher.backend.poll_interval_s", "teacher.backend.timeout_s", "teacher.backend.queue_dir",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
)
# A baseline (pgkd.enabled=false) never meets a teacher: these cannot change its numbers either.
BASELINE_NON_RESULT_KEYS = ("teacher", "prompt", "ablation", "pgkd")
HASH_CHARS = 10


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key) if isinstance(tree, dict) else None
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def result_config(cfg: DictConfig | dict) -> dict:
    """The resolved config as far as it can change a result.

    Path values become placeholders before resolving (``<paths.model_dir>/x.gguf``), so moving
    the checkout, the data dir or the cache does not change a run's identity.
    """
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    tree.pop("hydra", None)
    tree["run_name"] = "<run_name>"  # interpolated by loggers; never part of the identity
    if isinstance(tree.get("paths"), dict):
        tree["paths"] = {key: f"<paths.{key}>" for key in tree["paths"]}
    resolved = OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    for key in NON_RESULT_KEYS:
        _drop(resolved, key)
    if not (resolved.get("pgkd") or {}).get("enabled", True):
        for key in BASELINE_NON_RESULT_KEYS:
            resolved.pop(key, None)
        resolved["pgkd"] = {"enabled": False}
    return resolved


def digest(payload: Any, chars: int = HASH_CHARS) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:chars]


def config_hash(cfg: DictConfig | dict) -> str:
    """Short hash of ``result_config(cfg)``: equal hashes, equal numbers."""
    return digest(result_config(cfg))


def lineage_hash(cfg: DictConfig | dict) -> str:
    """``config_hash`` without ``pgkd.num_kd_steps``: runs that share their first steps."""
    tree = result_config(cfg)
    _drop(tree, "pgkd.num_kd_steps")
    return digest(tree)


def _run_hash_resolver(*, _root_: DictConfig) -> str:
    return config_hash(_root_)


def register_resolvers() -> None:
    """``${run_hash:}`` in ``run_name`` (the folder of every run and sweep job)."""
    if not OmegaConf.has_resolver("run_hash"):
        OmegaConf.register_new_resolver("run_hash", _run_hash_resolver)


@lru_cache(maxsize=1)
def git_state() -> dict:
    """Commit of the checkout the package runs from and whether tracked files were changed."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def versions() -> dict:
    """Versions of the libraries that shape a result."""
    found = {}
    for package in ("pgkd", "torch", "transformers", "pytorch-lightning", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def provenance(cfg: DictConfig) -> dict:
    """What ``metrics.json`` records about where its numbers come from."""
    return {"config_hash": config_hash(cfg), "lineage_hash": lineage_hash(cfg), **git_state(),
            "versions": versions()}


def file_identity(path: str | Path, chunk: int = 1 << 20) -> dict:
    """Size and sha256 prefix of a local model file (or every file of a model folder), memoised
    by (path, size, mtime): the same file under another path is the same teacher."""
    path = Path(path)
    if not path.exists():
        return {"missing": path.name}
    if path.is_file():
        return {"size": path.stat().st_size, "sha256": _sha256(str(path), path.stat().st_size,
                                                              path.stat().st_mtime_ns, chunk)[:16]}
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".sha256"))
    return {"size": sum(p.stat().st_size for p in files),
            "sha256": digest([(str(p.relative_to(path)), _sha256(str(p), p.stat().st_size, p.stat().st_mtime_ns, chunk))
                              for p in files], 16)}


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int, chunk: int) -> str:
    sidecar = Path(path + ".sha256")
    stamp = f"{size}:{mtime_ns}"
    if sidecar.exists():
        saved = sidecar.read_text().split()
        if len(saved) == 2 and saved[1] == stamp:
            return saved[0]
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
    value = hasher.hexdigest()
    if size > 64 << 20:  # worth remembering across processes (a 1 GB GGUF takes seconds)
        try:
            sidecar.write_text(f"{value} {stamp}\n")
        except OSError:
            pass
    return value
