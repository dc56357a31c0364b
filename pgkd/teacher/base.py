"""The teacher interface: chat messages + sampling parameters in, a reply with usage out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings. ``json_schema`` (a JSON schema of the expected reply) is enforced by
    backends that support constrained decoding (llama.cpp, OpenAI-compatible servers)."""

    temperature: float = 1.0
    max_tokens: int = 4096
    top_p: float | None = None
    seed: int | None = None
    json_schema: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reply:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    model: str = ""
    backend: str = ""
    cost_usd: float = 0.0
    cache_hit: bool = False
    request_index: int = 0
    usage_estimated: bool = False  # token counts are ours, not the provider's (file replies)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class TeacherError(RuntimeError):
    """Base class: every message names the backend."""


class TeacherAuthError(TeacherError):
    """Credentials missing or refused; never retried. The message names what to set."""


class TeacherRequestError(TeacherError):
    """The provider rejected the request itself (validation, unknown model); never retried."""


class TransientTeacherError(TeacherError):
    """Throttling, 5xx, timeouts, dropped connections, malformed bodies: worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExceeded(TeacherError):
    """The next call could exceed ``budget_usd``; the run stops cleanly with its state saved."""


class CacheMiss(TeacherError):
    """The replay backend was asked for a request that is not in the cache."""


class Backend(ABC):
    """One provider. ``complete`` makes exactly one request (retries are the client's and the
    SDK's business) and maps provider errors onto the TeacherError classes above."""

    name: str = "backend"
    model: str = ""

    def output_settings(self) -> dict:
        """Backend settings that change a reply (model file identity, server, decoding knobs);
        part of every cache key. Settings that only change speed or logging stay out."""
        return {}

    @property
    def cache_identity(self) -> tuple[str, str, dict]:
        """(backend, model, output settings) used in cache keys; the replay backend borrows
        another backend's."""
        return self.name, self.model, self.output_settings()

    @abstractmethod
    def complete(self, messages: list[Message], params: SamplingParams) -> Reply:
        """Send one request and return the reply (text and provider-reported token usage)."""

    def bind_dataset(self, dataset) -> None:  # noqa: B027 - optional hook
        """Called once with the run's dataset; only fakes use it."""
