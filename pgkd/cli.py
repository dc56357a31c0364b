"""Process set-up shared by the entry scripts (before torch is imported)."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_environment(script: str) -> None:
    """Point ``PGKD_ROOT`` at the repository of ``script`` and set CPU-friendly defaults: idle
    OpenMP threads must not spin (NOTES.md), tokenizers must not fork threads."""
    os.environ.setdefault("PGKD_ROOT", str(Path(script).resolve().parents[1]))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
