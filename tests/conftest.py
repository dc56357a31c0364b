"""Shared fixtures: the real config tree composed with Hydra, small real data slices, offline env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("PGKD_ROOT", str(ROOT))
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "PGKD_DATA_DIR" not in os.environ and SHARED_DATA.exists():
    os.environ["PGKD_DATA_DIR"] = str(SHARED_DATA)

import torch  # noqa: E402

torch.set_num_threads(1)


def data_dir() -> Path | None:
    value = os.environ.get("PGKD_DATA_DIR")
    return Path(value) if value else None


needs_shared_data = pytest.mark.skipif(
    not (data_dir() and (data_dir() / "huffpost" / "train.csv").exists()),
    reason="needs the shared dataset copies (PGKD_DATA_DIR)",
)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One embedding/teacher cache for the whole session (embeddings are the slow part)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose(tmp_path, cache_dir):
    """compose(*overrides) -> the real config tree with outputs under tmp_path."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import pgkd.config  # noqa: F401  (resolvers)

    def _compose(*overrides: str, return_hydra_config: bool = False):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return hydra_compose(
                "config",
                overrides=[f"paths.log_dir={tmp_path / 'outputs'}", f"paths.cache_dir={cache_dir}",
                           "trainer.enable_progress_bar=false", *overrides],
                return_hydra_config=return_hydra_config,
            )

    return _compose


@pytest.fixture(scope="session")
def ag_news_small():
    """A real AG News slice: 400 annotated rows (320 train / 80 val), 400 test rows."""
    from pgkd.data import load_dataset

    return load_dataset("ag_news", data_dir(), n_annotated=400, seed=0, test_limit=400,
                        label_order=["World", "Sports", "Business", "Sci/Tech"])
