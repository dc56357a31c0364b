"""CPU fine-tuning and inference speed of a fine-tuned student, per option, in one run.

    python scripts/bench_training.py                       # MiniLM-L6 on AG News train texts
    python scripts/bench_training.py --student mpnet_base --batches 2

Each option changes one thing against the reference (fp32, max_length 128, random batches,
1 thread, nothing frozen) and is timed on the same real texts, right after the reference, so
the ratios compare like with like on a busy machine. Writes results/bench/training.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext
from pathlib import Path

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding  # noqa: E402

from pgkd.data import load_dataset  # noqa: E402
from pgkd.students import encoders  # noqa: E402
from pgkd.students.finetuned import freeze_lower_layers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = {"minilm_l6": encoders.MINILM, "mpnet_base": encoders.MPNET}


def batches_of(tokenizer, texts: list[str], max_length: int, batch_size: int, grouped: bool, seed: int = 0):
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = np.random.default_rng(seed).permutation(len(ids))
    if grouped:  # what LengthGroupedSampler does: similar lengths share a batch, batches in random order
        order = sorted(order, key=lambda i: len(ids[i]))
    chunks = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    np.random.default_rng(seed).shuffle(chunks)
    collate = DataCollatorWithPadding(tokenizer)
    return [collate([{"input_ids": ids[i]} for i in chunk]) for chunk in chunks]


def train_rate(model, batches, labels: int, bf16: bool, frozen_layers: int) -> float:
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if frozen_layers:
        freeze_lower_layers(model, frozen_layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    rng = torch.Generator().manual_seed(0)
    seen, started = 0, None
    for i, batch in enumerate(batches):
        if i == 1:  # the first batch warms up the allocator and kernels
            started = time.perf_counter()
        target = torch.randint(0, labels, (len(batch["input_ids"]),), generator=rng)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen += len(target) if i else 0
    return seen / (time.perf_counter() - started)


@torch.inference_mode()
def inference_rate(model, batches, bf16: bool) -> float:
    model.eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    seen, started = 0, None
    for i, batch in enumerate(batches):
        if i == 1:
            started = time.perf_counter()
        with autocast:
            model(**batch)
        seen += len(batch["input_ids"]) if i else 0
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="minilm_l6", choices=sorted(STUDENTS))
    parser.add_argument("--dataset", default="ag_news")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=5, help="timed training batches per option (+1 warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over all options; the best rate counts")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "training.json")
    args = parser.parse_args()

    import os

    data = load_dataset(args.dataset, os.environ.get("PGKD_DATA_DIR"), n_annotated=1000, seed=0)
    source = encoders.resolve(STUDENTS[args.student], encoders.default_cache_dir())
    tokenizer = encoders.tokenizer_for(STUDENTS[args.student], encoders.default_cache_dir())
    lengths = [len(x) for x in tokenizer(list(data.train.text), verbose=False)["input_ids"]]
    p99 = int(min(512, np.ceil(np.quantile(lengths, 0.99))))
    texts = list(data.train.text[: args.batch_size * (args.batches + 1)])
    infer_texts = list(data.test.text[: args.batch_size * 2 * (args.batches + 1)])
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(data.taxonomy))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    layers = len(model.base_model.encoder.layer)
    reference = {"bf16": False, "max_length": 128, "grouped": False, "threads": 1, "frozen_layers": 0}
    options = [
        ("reference (fp32, 128 tokens, random batches, 1 thread)", {}),
        ("bf16 autocast", {"bf16": True}),
        ("max_length 64", {"max_length": 64}),
        (f"max_length auto (p99 = {p99})", {"max_length": p99}),
        (f"max_length 512 (paper; texts here are ~{int(np.median(lengths))} tokens)", {"max_length": 512}),
        ("length-grouped batches", {"grouped": True}),
        ("2 threads", {"threads": 2}),
        (f"embeddings + lowest {layers // 2} of {layers} layers frozen", {"frozen_layers": layers // 2}),
        ("defaults of conf/student/_finetuned.yaml: bf16, max_length auto, grouped",
         {"bf16": True, "max_length": p99, "grouped": True}),
        (f"defaults + lowest {layers // 2} layers frozen (student.kd_frozen_layers={layers // 2})",
         {"bf16": True, "max_length": p99, "grouped": True, "frozen_layers": layers // 2}),
    ]
    best: dict[str, dict] = {}
    for rep in range(args.repeats):  # interleaved passes: a busy spell slows one pass, not one option
        for name, change in options:
            setting = {**reference, **change}
            torch.set_num_threads(setting["threads"])
            model.load_state_dict(initial)
            train = train_rate(model, batches_of(tokenizer, texts, setting["max_length"], args.batch_size,
                                                 setting["grouped"]), len(data.taxonomy), setting["bf16"],
                               setting["frozen_layers"])
            infer = inference_rate(model, batches_of(tokenizer, infer_texts, setting["max_length"],
                                                     args.batch_size * 2, setting["grouped"]), setting["bf16"])
            row = best.setdefault(name, {"option": name, **setting, "train_samples_per_s": 0.0,
                                         "inference_samples_per_s": 0.0})
            row["train_samples_per_s"] = max(row["train_samples_per_s"], train)
            row["inference_samples_per_s"] = max(row["inference_samples_per_s"], infer)
            print(f"pass {rep + 1}: {name:<58} train {train:6.1f}/s  inference {infer:6.1f}/s", flush=True)
    rows = list(best.values())
    base = rows[0]
    for row in rows:
        row["train_ratio"] = row["train_samples_per_s"] / base["train_samples_per_s"]
        row["inference_ratio"] = row["inference_samples_per_s"] / base["inference_samples_per_s"]
    result = {"student": args.student, "dataset": args.dataset, "batch_size": args.batch_size,
              "timed_batches": args.batches, "repeats": args.repeats, "token_length_median": int(np.median(lengths)), "token_length_p99": p99,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\n| option | train samples/s | × reference | inference samples/s | × reference |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['option']} | {row['train_samples_per_s']:.1f} | {row['train_ratio']:.2f} | "
              f"{row['inference_samples_per_s']:.1f} | {row['inference_ratio']:.2f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
