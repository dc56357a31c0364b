"""In-process teachers: a GGUF model through llama-cpp-python, and a transformers causal LM."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from pgkd.identity import file_identity
from pgkd.teacher.base import Backend, Message, Reply, SamplingParams, TeacherRequestError


class LlamaCppBackend(Backend):
    """Any local ``.gguf`` (default: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, assembled by
    ``make teacher``). The sampling params' JSON schema constrains decoding, so replies parse."""

    name = "llamacpp"

    def __init__(self, model_path: str, n_ctx: int = 4096, n_threads: int | None = None,
                 min_p: float = 0.05, repeat_penalty: float = 1.15, seed: int = 0, model: str | None = None):
        self.model_path = Path(model_path)
        self.model = model or self.model_path.stem
        self.n_ctx, self.n_threads = n_ctx, n_threads or max(1, (os.cpu_count() or 2))
        self.min_p, self.repeat_penalty, self.seed = min_p, repeat_penalty, seed
        self._llm = None
        self._lock = threading.Lock()  # one Llama object, one request at a time

    def output_settings(self) -> dict:
        # the file itself, not its path: a moved checkout still hits the cache, a new file never does
        return {"model_file": file_identity(self.model_path), "n_ctx": self.n_ctx, "min_p": self.min_p,
                "repeat_penalty": self.repeat_penalty, "seed": self.seed}

    def llm(self):
        if self._llm is None:
            if not self.model_path.exists():
                raise TeacherRequestError(
                    f"llamacpp: model file {self.model_path} not found; run `make teacher` to assemble it"
                )
            try:
                from llama_cpp import Llama
            except ImportError as error:
                raise TeacherRequestError(
                    "llamacpp: llama-cpp-python is not installed; run `make teacher`"
                ) from error
            self._llm = Llama(model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                              seed=self.seed, verbose=False)
        return self._llm

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        kwargs = dict(messages=[{"role": m.role, "content": m.content} for m in messages],
                      temperature=params.temperature, max_tokens=params.max_tokens, min_p=self.min_p,
                      repeat_penalty=self.repeat_penalty, top_p=params.top_p if params.top_p is not None else 0.95)
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.json_schema:
            kwargs["response_format"] = {"type": "json_object", "schema": params.json_schema}
        with self._lock:
            started = time.perf_counter()
            try:
                out = self.llm().create_chat_completion(**kwargs)
            except ValueError as error:  # e.g. prompt longer than n_ctx
                raise TeacherRequestError(f"llamacpp: {error} (n_ctx={self.n_ctx})") from error
            latency = time.perf_counter() - started
        usage = out.get("usage", {})
        return Reply(text=out["choices"][0]["message"]["content"] or "",
                     input_tokens=usage.get("prompt_tokens", 0), output_tokens=usage.get("completion_tokens", 0),
                     latency_s=latency, model=self.model, backend=self.name)


class HFBackend(Backend):
    """A transformers causal LM with its chat template (local folder or hub id)."""

    name = "hf"

    def __init__(self, model_name_or_path: str, device: str = "cpu", dtype: str = "auto"):
        self.model = str(model_name_or_path)
        self.device, self.dtype = device, dtype
        self._loaded = None
        self._lock = threading.Lock()

    def output_settings(self) -> dict:
        local = Path(self.model)
        return {"model_file": file_identity(local) if local.exists() else self.model, "dtype": self.dtype}

    def load(self):
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model)
            model = AutoModelForCausalLM.from_pretrained(self.model, dtype=self.dtype).to(self.device).eval()
            self._loaded = tokenizer, model
        return self._loaded

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        import torch

        tokenizer, model = self.load()
        chat = [{"role": m.role, "content": m.content} for m in messages]
        with self._lock:
            started = time.perf_counter()
            inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True).to(self.device)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            sample = params.temperature > 0
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=params.max_tokens, do_sample=sample,
                                        temperature=params.temperature if sample else None,
                                        top_p=params.top_p if sample else None,
                                        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            prompt_len = inputs["input_ids"].shape[1]
            new_tokens = output[0, prompt_len:]
            text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        return Reply(text=text, input_tokens=int(prompt_len), output_tokens=int(len(new_tokens)),
                     latency_s=time.perf_counter() - started, model=self.model, backend=self.name)
