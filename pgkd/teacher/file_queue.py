"""A teacher reached through files: whoever answers (an LLM in a chat window, a process on a
machine with API access, a person) reads each request from a queue folder and writes the reply.

For request ``<id>`` the backend writes ``<id>.request.json`` (messages, sampling params, JSON
schema) and then ``<id>.prompt.txt`` (the messages as plain text), and waits for ``<id>.reply.txt``.
Answerers write the reply under another name and rename it into place (atomic); a reply that is
still growing is not read until it has been unchanged for one poll interval. ``<id>`` is a hash
of the request, so a resumed run finds the replies it already got, and several jobs can share one
folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from pgkd.teacher.base import Backend, Message, Reply, SamplingParams, TransientTeacherError


def render_prompt(messages: list[Message]) -> str:
    """The request as an answerer reads it: each message under its role."""
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages) + "\n"


class TokenCounter:
    """Token counts for usage a file reply does not report: a real tokenizer when one can be
    loaded (marked estimated all the same: the answering model's tokenizer is unknown), else
    characters / 4."""

    def __init__(self, tokenizer: str | None = None):
        self.name, self._tokenizer = tokenizer, None
        if tokenizer:
            try:
                from pgkd.students.encoders import resolve
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(resolve(tokenizer))
            except Exception:  # noqa: BLE001 - any failure falls back to the character estimate
                self._tokenizer = None

    def __call__(self, text: str) -> int:
        if self._tokenizer is None:
            return max(1, len(text) // 4)
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


class FileQueueBackend(Backend):
    """Requests as files in ``queue_dir``; replies read back from ``<id>.reply.txt``."""

    name = "file"

    def __init__(self, queue_dir: str | Path, model: str = "file-queue", poll_interval_s: float = 2.0,
                 timeout_s: float = 7200.0, tokenizer: str | None = None):
        self.queue_dir, self.model = Path(queue_dir), model
        self.poll_interval_s, self.timeout_s = poll_interval_s, timeout_s
        self.tokenizer = tokenizer
        self._counter: TokenCounter | None = None

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            self._counter = TokenCounter(self.tokenizer)
        return self._counter(text)

    def request_id(self, messages: list[Message], params: SamplingParams) -> str:
        payload = {"model": self.model, "messages": [[m.role, m.content] for m in messages], "params": params.as_dict()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    def _write_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def submit(self, messages: list[Message], params: SamplingParams) -> str:
        """Write the request files (once; an existing request is left alone) and return its id."""
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        request_id = self.request_id(messages, params)
        prompt = self.queue_dir / f"{request_id}.prompt.txt"
        if not prompt.exists():
            self._write_atomic(self.queue_dir / f"{request_id}.request.json", json.dumps({
                "id": request_id, "model": self.model, "created": time.time(),
                "messages": [{"role": m.role, "content": m.content} for m in messages],
                "params": params.as_dict(), "reply_file": f"{request_id}.reply.txt"}, indent=1))
            self._write_atomic(prompt, render_prompt(messages))
        return request_id

    def wait(self, request_id: str) -> str:
        """The reply text once ``<id>.reply.txt`` exists and has stopped changing."""
        reply_path = self.queue_dir / f"{request_id}.reply.txt"
        deadline = time.monotonic() + self.timeout_s
        settle = max(0.2, self.poll_interval_s)
        last = None
        while True:
            if reply_path.exists():
                stat = reply_path.stat()
                seen = (stat.st_size, stat.st_mtime_ns)
                if seen == last and stat.st_size > 0:
                    return reply_path.read_text()
                last = seen
                time.sleep(settle)
                continue
            if time.monotonic() > deadline:
                raise TransientTeacherError(
                    f"file: no reply to {self.queue_dir / (request_id + '.prompt.txt')} within "
                    f"{self.timeout_s:.0f} s; write the answer to {reply_path} (atomically: write another "
                    "name, then rename) and re-run the same command to go on")
            time.sleep(self.poll_interval_s)

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        started = time.perf_counter()
        request_id = self.submit(messages, params)
        text = self.wait(request_id)
        return Reply(text=text, input_tokens=self.count_tokens(render_prompt(messages)),
                     output_tokens=self.count_tokens(text), latency_s=time.perf_counter() - started,
                     model=self.model, backend=self.name, usage_estimated=True,
                     raw={"request_id": request_id, "tokenizer": self.tokenizer or "chars/4"})
