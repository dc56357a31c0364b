"""Anthropic Messages API through the official ``anthropic`` SDK."""

from __future__ import annotations

import os
import time

from pgkd.teacher.base import Backend, Message, Reply, SamplingParams, TeacherAuthError
from pgkd.teacher.http_errors import malformed_reply, sdk_errors


class AnthropicBackend(Backend):
    """Key from ``api_key_env`` (default ``ANTHROPIC_API_KEY``); the SDK retries 429/5xx/timeouts
    ``max_retries`` times honouring retry-after before the client's own retries."""

    name = "anthropic"

    def __init__(self, model: str = "claude-3-sonnet-20240229", api_key_env: str = "ANTHROPIC_API_KEY",
                 base_url: str | None = None, timeout_s: float = 120.0, max_retries: int = 2):
        self.model, self.api_key_env, self.base_url = model, api_key_env, base_url
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self._client = None

    def output_settings(self) -> dict:
        return {"base_url": self.base_url}

    def client(self):
        if self._client is None:
            import anthropic

            key = os.environ.get(self.api_key_env)
            if not key:
                raise TeacherAuthError(f"anthropic: no API key; set the environment variable {self.api_key_env}")
            self._client = anthropic.Anthropic(api_key=key, base_url=self.base_url,
                                               timeout=self.timeout_s, max_retries=self.max_retries)
        return self._client

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        import anthropic

        system = "\n\n".join(m.content for m in messages if m.role == "system")
        kwargs = dict(model=self.model, max_tokens=params.max_tokens,
                      messages=[{"role": m.role, "content": m.content} for m in messages if m.role != "system"])
        if system:
            kwargs["system"] = system
        # recent SDKs dropped the sampling keywords from create(); the API still reads them
        sampling = {"temperature": params.temperature, "top_p": params.top_p}
        kwargs["extra_body"] = {k: v for k, v in sampling.items() if v is not None}
        started = time.perf_counter()
        with sdk_errors(anthropic, "anthropic", self.api_key_env, self.timeout_s):
            response = self.client().messages.create(**kwargs)
        with malformed_reply("anthropic"):
            text = "".join(block.text for block in response.content if getattr(block, "type", "") == "text")
            usage = response.usage
            return Reply(text=text, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                         latency_s=time.perf_counter() - started, model=response.model or self.model,
                         backend=self.name)
