"""The inference benchmark runs on a tiny trained student and writes its report with parity."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_reports_latency_cost_and_parity(tmp_path):
    run_dir = tmp_path / "run"
    common = [f"paths.cache_dir={tmp_path / 'cache'}"]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), "student=tiny", "pgkd=off",
                    "dataset.n_annotated=200", "dataset.test_limit=100", "trainer.max_epochs=1",
                    "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *common], check=True,
                   capture_output=True, timeout=300)
    zero_shot = tmp_path / "zs"
    zero_shot.mkdir()
    (zero_shot / "metrics.json").write_text(json.dumps(
        {"teacher": {"model": "claude"}, "per_batch_of_64": {"cost_usd": 0.38, "sequential_latency_s": 60.0,
                                                            "input_tokens": 64_000, "output_tokens": 640}}))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_inference.py"), f"run_dir={run_dir}",
                          "texts=256", "repeats=3", f"out_dir={tmp_path / 'bench'}", f"report={tmp_path / 'table5.md'}",
                          f"zero_shot_run={zero_shot}", f"hydra.run.dir={tmp_path / 'hydra'}", *common],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next((tmp_path / "bench").glob("*.json")).read_text())
    backends = {row["backend"]: row for row in result["backends"]}
    assert {"pytorch-eager", "onnxruntime-fp32", "onnxruntime-int8"} <= set(backends)
    assert backends["onnxruntime-fp32"]["agreement"] > 0.99  # same model, other runtime
    assert backends["onnxruntime-int8"]["agreement"] > 0.8
    for row in backends.values():
        assert row["p50_s"] > 0 and row["batch_size"] == 64 and row["cost_per_batch_usd"] > 0
    report = (tmp_path / "table5.md").read_text()
    assert "onnxruntime-int8" in report and "faster" in report and "m5.4xlarge" in report
    assert result["llm"]["reference"]["cost_usd"] == (64_000 * 3.0 + 640 * 15.0) / 1e6  # tokens x price
