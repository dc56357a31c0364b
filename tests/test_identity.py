"""Trustworthy runs: a run's folder follows its whole config, a finished run is reused only when
its config hash matches, force redoes it, a longer run continues a shorter one, and teacher
cache entries follow what changes a reply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from pgkd.experiment import RunDirConflict, run
from pgkd.identity import config_hash, file_identity
from pgkd.teacher import LlamaCppBackend, Message, SamplingParams
from pgkd.teacher.store import cache_key

FAST = ("debug=fdr", "dataset.n_annotated=120", "dataset.test_limit=100", "pgkd.samples_per_step=8")


def ledger_purposes(run_dir: Path) -> list[str]:
    lines = (run_dir / "teacher_ledger.jsonl").read_text().splitlines()
    return [json.loads(line)["purpose"] for line in lines if json.loads(line)["status"] == "ok"]


def test_keys_that_change_results_change_the_folder(compose):
    base = compose(*FAST)
    changed = ["pgkd.num_kd_steps=3", "pgkd.samples_per_step=16", "pgkd.mining=oof", "trainer.max_epochs=2",
               "callbacks.early_stopping.patience=2", "teacher.backend.label_noise=0.5", "student.lr=3e-3",
               "prompt.sections.intro=hello", "dataset.val_fraction=0.3"]
    names = {base.run_name} | {compose(*FAST, o).run_name for o in changed}
    assert len(names) == len(changed) + 1
    assert all(name.startswith("debug/ag_news/tiny/pgkd-scripted-full/n120/seed0-") for name in names)


def test_keys_that_cannot_change_results_keep_the_folder(compose, tmp_path):
    base = compose(*FAST)
    same = ["threads=2", "trainer.enable_progress_bar=true", "logger=none", "force=true",
            "teacher.budget_usd=3", f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'elsewhere'}", "task_name=debug"]
    assert {compose(*FAST, o).run_name for o in same} == {base.run_name}
    # a baseline never meets a teacher: teacher and prompt keys do not split its runs
    off = compose(*FAST, "pgkd=off")
    assert compose(*FAST, "pgkd=off", "teacher=llamacpp").run_name == off.run_name
    assert compose(*FAST, "pgkd=off", "pgkd.n_fewshot=3").run_name == off.run_name


def test_moving_the_checkout_keeps_the_hash_of_local_teacher_paths(compose, tmp_path):
    a = compose("teacher=llamacpp", f"paths.model_dir={tmp_path / 'a'}")
    b = compose("teacher=llamacpp", f"paths.model_dir={tmp_path / 'b'}")
    assert config_hash(a) == config_hash(b)


def test_more_kd_steps_continue_a_finished_shorter_run(compose):
    short = run(compose(*FAST, "pgkd.num_kd_steps=2"))
    long_cfg = compose(*FAST, "pgkd.num_kd_steps=4")
    assert long_cfg.paths.output_dir != compose(*FAST, "pgkd.num_kd_steps=2").paths.output_dir
    long = run(long_cfg)
    assert short["stopped"] == long["stopped"] == "max_steps"
    assert [s["step"] for s in short["steps"]] == [0, 1, 2] and [s["step"] for s in long["steps"]] == [0, 1, 2, 3, 4]
    assert long["continued_from"]["kd_steps"] == 2
    assert [s["val_loss"] for s in long["steps"][:3]] == [s["val_loss"] for s in short["steps"]]
    # exactly two new teacher steps were asked: the ledger holds steps 1-2 (taken over) and 3-4
    long_dir = Path(long_cfg.paths.output_dir)
    assert ledger_purposes(long_dir) == ["pgkd_step_1", "pgkd_step_2", "pgkd_step_3", "pgkd_step_4"]
    assert long["teacher"]["calls"] == 4
    # the short run is untouched and still answers its own config
    again = run(compose(*FAST, "pgkd.num_kd_steps=2"))
    assert again["steps"] == short["steps"] and again["config_hash"] == short["config_hash"]


def test_a_finished_run_is_reused_only_for_its_hash_and_force_redoes_it(compose):
    cfg = compose(*FAST, "pgkd.num_kd_steps=1")
    first = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config_hash"] == config_hash(cfg) == cfg.run_name.rsplit("-", 1)[1]
    assert {"commit", "dirty", "versions", "lineage_hash"} <= set(metrics)
    assert {"torch", "transformers", "pytorch-lightning"} <= set(metrics["versions"])
    # mark the stored result: a plain re-run returns it as it is ...
    metrics["test"]["accuracy"] = -1.0
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert run(cfg)["test"]["accuracy"] == -1.0
    # ... and force=true computes it again from scratch (one new teacher step, not two)
    redone = run(compose(*FAST, "pgkd.num_kd_steps=1", "force=true"))
    assert redone["test"]["accuracy"] == first["test"]["accuracy"] != -1.0
    assert ledger_purposes(run_dir) == ["pgkd_step_1"]


def test_a_run_dir_of_another_config_is_never_returned(compose, tmp_path):
    run(compose(*FAST, "pgkd.num_kd_steps=1"), tmp_path)
    with pytest.raises(RunDirConflict, match="holds results of another config"):
        run(compose(*FAST, "pgkd.num_kd_steps=1", "pgkd.n_fewshot=4"), tmp_path)


def test_a_moved_run_resumes(compose, tmp_path):
    cfg = compose(*FAST, "pgkd.num_kd_steps=1", f"paths.log_dir={tmp_path / 'a'}")
    run(cfg)
    moved_root = tmp_path / "b"
    shutil.copytree(tmp_path / "a", moved_root)
    moved = compose(*FAST, "pgkd.num_kd_steps=2", f"paths.log_dir={moved_root}", f"paths.root_dir={tmp_path}")
    result = run(moved)
    assert result["continued_from"]["kd_steps"] == 1 and len(result["steps"]) == 3


def test_local_model_file_identity_keys_the_cache(tmp_path):
    model = tmp_path / "a" / "model.gguf"
    model.parent.mkdir()
    model.write_bytes(b"weights-v1" * 1000)
    copy = tmp_path / "b" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copy(model, copy)
    messages, params = [Message("user", "hi")], SamplingParams()

    def key(backend):
        name, model_name, settings = backend.cache_identity
        return cache_key(name, model_name, messages, params, 0, settings)

    same_file = LlamaCppBackend(str(copy), model="m")
    assert key(LlamaCppBackend(str(model), model="m")) == key(same_file)  # moved: still a hit
    assert file_identity(model)["size"] == 10_000 and len(file_identity(model)["sha256"]) == 16
    assert key(LlamaCppBackend(str(model), model="m", min_p=0.1)) != key(same_file)
    assert key(LlamaCppBackend(str(model), model="m", repeat_penalty=1.0)) != key(same_file)
    assert key(LlamaCppBackend(str(model), model="m", n_ctx=2048)) != key(same_file)
    copy.write_bytes(b"weights-v2" * 1000)  # another model file under the same path and name
    assert key(LlamaCppBackend(str(copy), model="m")) != key(LlamaCppBackend(str(model), model="m"))


def test_replay_takes_the_original_teachers_identity_and_recreates_a_run(compose, tmp_path):
    cache = f"teacher.cache_path={tmp_path / 'cache.sqlite'}"
    original_cfg = compose(*FAST, "pgkd.num_kd_steps=2", cache)
    original = run(original_cfg)
    replay_cfg = compose(*FAST, "pgkd.num_kd_steps=2", "teacher=replay", "teacher@teacher.original=scripted",
                         f"teacher.cache_path={tmp_path / 'cache.sqlite'}")
    replay_backend = instantiate(replay_cfg.teacher.backend)
    assert replay_backend.cache_identity == instantiate(original_cfg.teacher.backend).cache_identity
    replayed = run(replay_cfg)
    assert replayed["run_name"] != original["run_name"]
    assert [s["val_loss"] for s in replayed["steps"]] == [s["val_loss"] for s in original["steps"]]
    assert replayed["test"] == original["test"]
    assert replayed["teacher"]["calls"] == replayed["teacher"]["cache_hits"] == 2
    assert replayed["teacher"]["cost_usd"] == 0.0


def test_a_collected_transcript_replays_the_run_on_a_fresh_cache(compose, tmp_path):
    from pgkd.results import collect
    from pgkd.transcripts import read_transcript

    cache = f"teacher.cache_path={tmp_path / 'cache.sqlite'}"
    original = run(compose(*FAST, "pgkd.num_kd_steps=2", cache))
    assert collect([tmp_path / "outputs"], tmp_path / "results" / "runs", tmp_path / "results" / "transcripts") == 1
    transcript = next((tmp_path / "results" / "transcripts").glob("*.jsonl.gz"))
    rows = read_transcript(transcript)
    assert [r["purpose"] for r in rows] == ["pgkd_step_1", "pgkd_step_2"]
    assert all(r["prompt"] and "please generate 8 training samples" in r["prompt"] and r["reply"] for r in rows)
    replayed = run(compose(*FAST, "pgkd.num_kd_steps=2", "teacher=replay", "teacher@teacher.original=scripted",
                           f"teacher.cache_path={tmp_path / 'fresh.sqlite'}", f"teacher.transcripts=[{transcript}]"))
    assert replayed["steps"][-1]["val_loss"] == original["steps"][-1]["val_loss"]
    assert replayed["test"] == original["test"] and replayed["teacher"]["cache_hits"] == 2
