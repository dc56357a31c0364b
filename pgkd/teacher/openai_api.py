"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio)
through the official ``openai`` SDK."""

from __future__ import annotations

import os
import time

from pgkd.teacher.base import Backend, Message, Reply, SamplingParams, TeacherAuthError
from pgkd.teacher.http_errors import malformed_reply, sdk_errors


class OpenAIBackend(Backend):
    """``base_url`` selects the server; local servers need no key (``api_key_env`` may be unset).
    With ``use_response_format`` the sampling params' JSON schema is sent as ``response_format``
    (wrapped in an object, as the protocol requires)."""

    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 require_key: bool = True, timeout_s: float = 120.0, max_retries: int = 2,
                 use_response_format: bool = False):
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.require_key, self.timeout_s, self.max_retries = require_key, timeout_s, max_retries
        self.use_response_format = use_response_format
        self._client = None

    def output_settings(self) -> dict:
        return {"base_url": self.base_url, "use_response_format": self.use_response_format}

    def client(self):
        if self._client is None:
            import openai

            key = os.environ.get(self.api_key_env) if self.api_key_env else None
            if not key and self.require_key:
                raise TeacherAuthError(f"openai: no API key; set the environment variable {self.api_key_env}")
            self._client = openai.OpenAI(api_key=key or "not-needed", base_url=self.base_url,
                                         timeout=self.timeout_s, max_retries=self.max_retries)
        return self._client

    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        import openai

        kwargs = dict(model=self.model, messages=[{"role": m.role, "content": m.content} for m in messages],
                      temperature=params.temperature, max_tokens=params.max_tokens)
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if self.use_response_format and params.json_schema:
            schema = {"type": "object", "properties": {"samples": params.json_schema},
                      "required": ["samples"]} if params.json_schema.get("type") == "array" else params.json_schema
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "reply", "schema": schema}}
        started = time.perf_counter()
        with sdk_errors(openai, f"openai ({self.base_url or 'api.openai.com'})", self.api_key_env, self.timeout_s):
            response = self.client().chat.completions.create(**kwargs)
        with malformed_reply("openai"):
            usage = response.usage
            return Reply(text=response.choices[0].message.content or "",
                         input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                         output_tokens=getattr(usage, "completion_tokens", 0) or 0,
                         latency_s=time.perf_counter() - started, model=response.model or self.model,
                         backend=self.name)
