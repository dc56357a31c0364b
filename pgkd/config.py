"""Config helpers: OmegaConf resolvers, secret redaction, run-dir bookkeeping."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|session_token|access_key|auth_token|bearer)", re.I)
REDACTED = "***redacted***"


def _wandb_mode() -> str:
    """WANDB_MODE if set, else online when a key is present, else offline."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def register_resolvers() -> None:
    from pgkd.identity import register_resolvers as register_identity

    if not OmegaConf.has_resolver("wandb_mode"):
        OmegaConf.register_new_resolver("wandb_mode", _wandb_mode)
    register_identity()


register_resolvers()


def redact(value: Any, key: str = "") -> Any:
    """Copy of a plain config tree with secret-looking values replaced. Keys that only *name* an
    environment variable (``*_env``) are kept: they hold no secret."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value is not None and SECRET_KEY.search(key) and not key.endswith("_env"):
        return REDACTED
    return value


def to_plain(cfg: DictConfig | dict) -> dict:
    """Resolved, redacted plain dict (what may reach disk, logs and W&B)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return redact(cfg)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))))


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (a killed run never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
