"""Anthropic Messages API through the official ``anthropic`` SDK."""

from __future__ import annotations

import os
import time

from pgkd.teacher.base import (Backend, Message, Reply, SamplingParams, TeacherAuthError,
                               TeacherRequestError, TransientTeacherError)
from pgkd.teacher.http_errors import retry_after_of


class AnthropicBackend(Backend):
    """Key from ``api_key_env`` (default ``ANTHROPIC_API_KEY``); the SDK retries 429/5xx/timeouts
    ``max_retries`` times honouring retry-after before the client's own retries."""

    name = "anthropic"

    def __init__(self, model: str = "claude-3-sonnet-20240229", api_key_env: str = "ANTHROPIC_API_KEY",
                 base_url: str | None = None, timeout_s: float = 120.0, max_retries: int = 2):
        self.model, self.api_key_env, self.base_url = model, api_key_env, base_url
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self._client = None

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
        try:
            response = self.client().messages.create(**kwargs)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as error:
            raise TeacherAuthError(
                f"anthropic: HTTP {error.status_code} {error.message}; check {self.api_key_env}"
            ) from error
        except (anthropic.RateLimitError, anthropic.InternalServerError) as error:
            raise TransientTeacherError(f"anthropic: HTTP {error.status_code} after SDK retries",
                                        retry_after_of(error.response)) from error
        except anthropic.APITimeoutError as error:
            raise TransientTeacherError(f"anthropic: timed out after {self.timeout_s}s") from error
        except anthropic.APIConnectionError as error:
            raise TransientTeacherError(f"anthropic: connection failed: {error}") from error
        except anthropic.APIStatusError as error:
            if error.status_code >= 500:
                raise TransientTeacherError(f"anthropic: HTTP {error.status_code}") from error
            raise TeacherRequestError(f"anthropic: HTTP {error.status_code} {error.message}") from error
        except (anthropic.APIResponseValidationError, ValueError) as error:
            raise TransientTeacherError(f"anthropic: malformed response body: {error}") from error
        try:
            text = "".join(block.text for block in response.content if getattr(block, "type", "") == "text")
            usage = response.usage
            return Reply(text=text, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                         latency_s=time.perf_counter() - started, model=response.model or self.model,
                         backend=self.name)
        except (AttributeError, TypeError) as error:
            raise TransientTeacherError(f"anthropic: malformed response body: {error}") from error
