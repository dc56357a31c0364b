"""Latency / throughput / cost of a trained student per batch of 64 (paper Table 5).

    python scripts/bench_inference.py run_dir=outputs/runs/pgkd/ag_news/minilm_l6/baseline/n1000/seed0
    python scripts/bench_inference.py run_dir=... zero_shot_run=outputs/runs/zero_shot/ag_news/...
"""

import json
import platform
import tempfile
from pathlib import Path

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import pgkd.config  # noqa: E402,F401
from pgkd import bench  # noqa: E402
from pgkd.classifier import load  # noqa: E402
from pgkd.export import parity_texts  # noqa: E402


def run(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    model = load(run_dir, device="cpu")  # the run's model/ folder: labels and student spec included
    sample = parity_texts(run_dir, cfg.texts, cfg.texts_file)
    if sample.gold is None:
        raise SystemExit(f"{cfg.texts_file}: the benchmark measures accuracy too: give texts a label column")
    texts = pd.DataFrame({"text": sample.texts})
    gold = np.array([model.labels.index(g) if g in model.labels else -1 for g in sample.gold or []])
    student, run = model.student, model.spec.get("run", {})
    tokenizer, max_length = bench.tokenizer_and_length(student)
    batches = bench.encode_batches(tokenizer, texts.text, max_length, cfg.batch_size, cfg.sort_by_length)
    torch.set_num_threads(cfg.cpu_threads)
    pipeline = bench.Pipeline(student)
    backends = [bench.torch_backend(pipeline)]
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if {"onnx_fp32", "onnx_int8"} & set(cfg.backends):
        onnx_dir = Path(tempfile.mkdtemp(prefix="pgkd-onnx-"))  # models stay out of results/
        onnx_path = bench.export_onnx(pipeline, onnx_dir / "student.onnx", tokenizer)
        if "onnx_fp32" in cfg.backends:
            backends.append(bench.onnx_backend(onnx_path, cfg.cpu_threads))
        if "onnx_int8" in cfg.backends:
            backends.append(bench.onnx_backend(onnx_path, cfg.cpu_threads, int8=True))
    if torch.cuda.is_available():
        import copy

        for name, dtype, compiled in (("gpu_fp32", None, False), ("gpu_bf16", torch.bfloat16, False),
                                      ("gpu_compile", torch.bfloat16, True)):
            if name == "gpu_fp32" or name in cfg.backends:
                backends.append(bench.torch_backend(copy.deepcopy(pipeline), "cuda", dtype, compiled,
                                                    f"pytorch-{name.replace('gpu_', 'cuda-')}"))
    timed = [b for b in batches if len(b[0]) == cfg.batch_size] or batches
    reference = None
    rows = []
    for backend in backends:
        proba = bench.predict_all(backend, batches, len(texts), len(model.labels))
        reference = proba if reference is None else reference
        timing = bench.time_batches(backend, timed, cfg.warmup, cfg.repeats)
        instance = cfg.instances.gpu if backend.device == "cuda" else cfg.instances.cpu
        rows.append({"backend": backend.name, "device": backend.device, **timing,
                     **bench.parity(reference, proba, gold), "instance": instance.name,
                     "cost_per_batch_usd": timing["p50_s"] * instance.usd_per_hour / 3600})
    llm = None
    if cfg.zero_shot_run:
        zero_shot = json.loads((Path(cfg.zero_shot_run) / "metrics.json").read_text())
        llm = {"teacher": zero_shot["teacher"]["model"], **zero_shot["per_batch_of_64"]}
        reference = cfg.llm_reference_prices
        llm["reference"] = {"name": reference.name, "cost_usd": (llm["input_tokens"] * reference.input_per_mtok
                                                                 + llm["output_tokens"] * reference.output_per_mtok) / 1e6}
    name, dataset = model.spec["student"].get("name", "student"), run.get("dataset", "texts")
    result = {"run_dir": str(run_dir), "student": name, "dataset": dataset,
              "texts": len(texts), "max_length": max_length, "padding": "dynamic, length-sorted batches"
              if cfg.sort_by_length else "dynamic", "cpu_threads": cfg.cpu_threads,
              "cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.get_device_name(0)
              if torch.cuda.is_available() else None, "backends": rows, "llm": llm}
    (out_dir / f"{name}-{dataset}.json").write_text(json.dumps(result, indent=1))
    Path(cfg.report).write_text(render(result))
    print(render(result))
    return result


def render(result: dict) -> str:
    lines = [f"# Table 5: inference latency and cost per batch of {result['backends'][0]['batch_size']}",
             "", f"Student `{result['student']}` on {result['dataset']} ({result['texts']} test texts for parity); "
             f"max_length {result['max_length']}, {result['padding']}; CPU threads {result['cpu_threads']}; "
             f"GPU: {result['cuda'] or 'none'}. Cost = p50 latency × on-demand price.", "",
             "| backend | device | p50 s | p95 s | texts/s | agreement vs eager | accuracy | Δacc (pts) | instance | $ per batch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["backends"]:
        lines.append(f"| {r['backend']} | {r['device']} | {r['p50_s']:.4f} | {r['p95_s']:.4f} | {r['throughput_per_s']:.0f} "
                     f"| {r['agreement']:.4f} | {r['accuracy']:.4f} | {r['accuracy_delta_pts']:+.2f} | {r['instance']} "
                     f"| {r['cost_per_batch_usd']:.6f} |")
    if result["llm"]:
        llm, best = result["llm"], min(result["backends"], key=lambda r: r["p50_s"])
        lines += ["", f"LLM zero-shot ({llm['teacher']}), measured ledger: ${llm['cost_usd']:.4f} and "
                      f"{llm['sequential_latency_s']:.1f} s (sequential) per 64 texts → fastest student is "
                      f"{llm['sequential_latency_s'] / best['p50_s']:.0f}× faster"
                      + (f" and {llm['cost_usd'] / best['cost_per_batch_usd']:.0f}× cheaper." if llm["cost_usd"] else
                         " (the local LLM has no API price).")]
        if llm.get("reference"):
            ref = llm["reference"]
            lines.append(f"The same tokens ({llm['input_tokens']:.0f} in / {llm['output_tokens']:.0f} out per 64 texts) at "
                         f"{ref['name']} prices: ${ref['cost_usd']:.4f} per batch, "
                         f"{ref['cost_usd'] / best['cost_per_batch_usd']:.0f}× the fastest student's cost.")
    lines += ["", "Paper (BERT-base + PGKD): 21.45 s / $0.0046 per batch on m5.4xlarge, 0.46 s / $0.0107 on "
                  "g5.4xlarge; Claude 3 zero-shot 60.64 s / $0.3867."]
    return "\n".join(lines) + "\n"


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
