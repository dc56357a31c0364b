"""Every command line the READMEs show composes with the real config tree (and the users' own
sweep runs), so the documentation cannot drift from the code."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import ROOT

DOCS = ["README.md", "results/README.md"]
CONFIG_OF = {"run.py": "config", "zero_shot.py": "zero_shot", "predict.py": "predict", "export.py": "export",
             "bench_inference.py": "bench", "wandb_dashboard.py": "dashboard"}
ARGPARSE_SCRIPTS = {"make_tables.py", "demo.py", "install_teacher_model.py", "check_reply.py", "bench_training.py"}


def shell_lines(text: str) -> list[str]:
    """The lines of the ```bash blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def commands(kind: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for line in shell_lines((ROOT / doc).read_text()):
            words = shlex.split(re.sub(r"\$\((ls -d [^)]*)\)", "outputs/runs/x", line.replace("$RUN", "outputs/runs/x")))
            if kind == "python" and words[0] in ("python", "python3") and words[1].startswith("scripts/"):
                found.append((doc, line))
            elif kind == "make" and words[0] == "make":
                found.append((doc, line))
    return found


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """A multirun's jobs: every combination of comma-separated values (lists in [] stay whole)."""
    choices = []
    for override in overrides:
        key, _, value = override.partition("=")
        values = value.split(",") if "," in value and not value.startswith("[") else [value]
        choices.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]


def compose_command(line: str) -> list:
    words = shlex.split(re.sub(r"\$\((ls -d [^)]*)\)", "outputs/runs/x", line.replace("$RUN", "outputs/runs/x")))
    script = words[1].split("/")[-1]
    if script in ARGPARSE_SCRIPTS:
        assert (ROOT / "scripts" / script).exists(), line
        return []
    overrides = [w for w in words[2:] if w != "-m" and "…" not in w]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return [compose(CONFIG_OF[script], overrides=job) for job in expand_sweep(overrides)]


def test_the_readmes_show_the_commands_users_type():
    lines = [line for _, line in commands("python")]
    assert "python scripts/run.py -m dataset=ag_news,yahoo seed=0,1,2,3,4" in lines
    assert any(line.startswith("python scripts/predict.py") for line in lines)
    assert any("format=onnx" in line for line in lines) and any("format=hf" in line for line in lines)
    assert any(line.startswith("make reproduce-table2") for _, line in commands("make"))


@pytest.mark.parametrize("doc, line", commands("python"), ids=lambda v: v if len(v) < 60 else v[:60])
def test_every_python_command_in_the_readmes_composes(doc, line):
    for cfg in compose_command(line):
        assert cfg is not None


def test_the_users_sweep_composes_to_ten_jobs_with_yahoo_as_yahoo_answers():
    jobs = compose_command("python scripts/run.py -m dataset=ag_news,yahoo seed=0,1,2,3,4")
    assert len(jobs) == 10
    assert {cfg.dataset.name for cfg in jobs} == {"ag_news", "yahoo_answers"}
    assert {cfg.dataset.hub_id for cfg in jobs if cfg.dataset.name == "yahoo_answers"} == {
        "community-datasets/yahoo_answers_topics"}


@pytest.mark.parametrize("doc, line", commands("make"), ids=lambda v: v if len(v) < 60 else v[:60])
def test_every_make_command_in_the_readmes_is_a_target_whose_commands_compose(doc, line):
    out = subprocess.run(["make", "-n", *shlex.split(line)[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    composed = 0
    for step in out.stdout.splitlines():
        match = re.search(r"(?:^|\s)\S*python\S* (scripts/(?:run|zero_shot)\.py .*)$", step)
        if match:
            composed += len(compose_command("python " + match.group(1)))
    if "reproduce" in line or line.split()[1] == "run":
        assert composed > 0, out.stdout  # the target's sweep lines were found and composed


def test_the_users_sweep_runs_and_records_yahoo_as_skipped(tmp_path, cache_dir):
    """`-m dataset=ag_news,yahoo seed=...` (smoke-sized): ag_news runs, yahoo (no copy, no hub
    offline) is recorded as skipped with its reason, and the sweep finishes."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), "-m", "dataset=ag_news,yahoo", "seed=0,1",
                          "debug=fdr", "pgkd.num_kd_steps=1", f"paths.log_dir={tmp_path}", f"paths.cache_dir={cache_dir}"],
                         capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                            "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/**/metrics.json")]
    status = sorted((m["dataset"], m["seed"], m["status"]) for m in metrics)
    assert status == [("ag_news", 0, "finished"), ("ag_news", 1, "finished"),
                      ("yahoo_answers", 0, "skipped"), ("yahoo_answers", 1, "skipped")]
    assert all("yahoo_answers_topics" in m["reason"] for m in metrics if m["status"] == "skipped")


def test_help_answers_without_importing_torch():
    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "scripts" / "run.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Powered by Hydra" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "pytorch_lightning" not in imported
