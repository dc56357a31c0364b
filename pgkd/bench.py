"""Inference latency, throughput and cost of a trained student (paper Table 5), over PyTorch eager,
PyTorch bf16/fp16 + torch.compile (GPU), and ONNX Runtime fp32 / dynamic int8 (CPU)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from pgkd.students import FrozenEncoderStudent, Student
from pgkd.students.base import length_sorted_batches


class Pipeline(torch.nn.Module):
    """token ids -> class probabilities, for either kind of student (what gets exported)."""

    def __init__(self, student: Student):
        super().__init__()
        self.frozen = isinstance(student, FrozenEncoderStudent)
        if self.frozen:
            self.encoder, self.head = student.encoder.model, student.module.linear
        else:
            self.model = student.module.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            return torch.softmax(self.model(input_ids=input_ids, attention_mask=attention_mask).logits, -1)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        return torch.softmax(self.head(pooled), -1)


def tokenizer_and_length(student: Student):
    if isinstance(student, FrozenEncoderStudent):
        return student.encoder.tokenizer, student.encoder.max_length
    return student.tokenizer, student.max_length


@dataclass
class Backend:
    name: str
    predict: Callable[[dict], np.ndarray]  # numpy int64 inputs -> probabilities
    device: str = "cpu"


def torch_backend(pipeline: Pipeline, device: str = "cpu", dtype: torch.dtype | None = None,
                  compile: bool = False, name: str = "pytorch-eager") -> Backend:
    module = pipeline.to(device).eval()
    if dtype is not None:
        module = module.to(dtype)
    runner = torch.compile(module, dynamic=True) if compile else module

    @torch.inference_mode()
    def predict(inputs: dict) -> np.ndarray:
        tensors = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
        out = runner(**tensors).float().cpu().numpy()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    return Backend(name, predict, device)


def export_onnx(pipeline: Pipeline, path: Path, tokenizer) -> Path:
    sample = tokenizer(["an example sentence", "another"], padding=True, return_tensors="pt")
    torch.onnx.export(pipeline.cpu().eval(), (sample["input_ids"], sample["attention_mask"]), str(path),
                      input_names=["input_ids", "attention_mask"], output_names=["proba"], opset_version=17,
                      dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                    "proba": {0: "batch"}}, dynamo=False)
    return path


def onnx_backend(path: Path, threads: int, int8: bool = False) -> Backend:
    import onnxruntime as ort

    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = path.with_name(path.stem + "-int8.onnx")
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
        path = quantized
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Backend("onnxruntime-int8" if int8 else "onnxruntime-fp32",
                   lambda inputs: session.run(["proba"], inputs)[0])


def encode_batches(tokenizer, texts: Sequence[str], max_length: int, batch_size: int,
                   sort_by_length: bool) -> list[tuple[np.ndarray, dict]]:
    """(row indices, numpy inputs) per batch, padded to the longest text of the batch."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    if sort_by_length:
        order = length_sorted_batches([len(x) for x in ids], batch_size)
    else:
        order = [np.arange(i, min(i + batch_size, len(ids))) for i in range(0, len(ids), batch_size)]
    batches = []
    for rows in order:
        width = max(len(ids[i]) for i in rows)
        input_ids = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for j, i in enumerate(rows):
            input_ids[j, :len(ids[i])], mask[j, :len(ids[i])] = ids[i], 1
        batches.append((rows, {"input_ids": input_ids, "attention_mask": mask}))
    return batches


def predict_all(backend: Backend, batches, n: int, num_labels: int) -> np.ndarray:
    proba = np.zeros((n, num_labels), dtype=np.float32)
    for rows, inputs in batches:
        proba[rows] = backend.predict(inputs)
    return proba


def time_batches(backend: Backend, batches, warmup: int, repeats: int) -> dict:
    """Latency of single batches (the paper's unit: 64 texts): p50/p95 after warm-up."""
    for _, inputs in batches[:warmup]:
        backend.predict(inputs)
    times = []
    for r in range(repeats):
        _, inputs = batches[r % len(batches)]
        started = time.perf_counter()
        backend.predict(inputs)
        times.append(time.perf_counter() - started)
    times = np.array(times)
    size = len(batches[0][0])
    return {"p50_s": float(np.percentile(times, 50)), "p95_s": float(np.percentile(times, 95)),
            "mean_s": float(times.mean()), "throughput_per_s": float(size / np.percentile(times, 50)),
            "batch_size": size, "repeats": repeats}


def parity(reference: np.ndarray, other: np.ndarray, gold: np.ndarray) -> dict:
    agree = float((reference.argmax(1) == other.argmax(1)).mean())
    return {"agreement": agree, "accuracy": float((other.argmax(1) == gold).mean()),
            "accuracy_delta_pts": float(100 * ((other.argmax(1) == gold).mean() - (reference.argmax(1) == gold).mean()))}


__all__ = ["Pipeline", "tokenizer_and_length", "torch_backend", "onnx_backend", "export_onnx", "encode_batches",
           "predict_all", "time_batches", "parity"]
