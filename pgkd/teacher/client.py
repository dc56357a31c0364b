"""``TeacherClient``: any backend plus the cross-cutting machinery — response cache, retries
with backoff, cost ledger, budget cap and concurrent batches."""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from pgkd.teacher.base import (Backend, BudgetExceeded, Message, Reply, SamplingParams,
                               TeacherError, TransientTeacherError)
from pgkd.teacher.store import CostLedger, ResponseCache, cache_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class RetryPolicy:
    """On top of the SDKs' own retries: exponential backoff with full jitter, honouring the
    provider's retry-after."""

    max_attempts: int = 3
    base_delay_s: float = 2.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** attempt))
        return max(backoff, retry_after or 0.0)


@dataclass
class Request:
    messages: list[Message]
    params: SamplingParams
    request_index: int = 0
    purpose: str = ""


class TeacherClient:
    """Ask a backend, with caching, retries, a ledger and a budget.

    ``accept(text) -> bool`` decides whether a reply is stored in the cache: a reply that fails
    to parse is returned (and paid for, and ledgered as rejected) but never cached as a success.
    """

    def __init__(self, backend: Backend, ledger: CostLedger, cache: ResponseCache | None = None,
                 prices: Prices = Prices(), retry: RetryPolicy = RetryPolicy(),
                 budget_usd: float | None = None, max_concurrency: int = 4,
                 chars_per_token: float = 4.0, name: str | None = None, samples_per_call: int = 32):
        self.backend, self.ledger, self.cache = backend, ledger, cache
        self.prices, self.retry, self.budget_usd = prices, retry, budget_usd
        self.max_concurrency, self.chars_per_token = max_concurrency, chars_per_token
        self.name = name or backend.name
        self.samples_per_call = samples_per_call
        self._budget_lock = threading.Lock()
        self._reserved = 0.0  # worst-case cost of the calls in flight

    @property
    def model(self) -> str:
        return self.backend.model

    def worst_case_cost(self, messages: Sequence[Message], params: SamplingParams) -> float:
        prompt_tokens = sum(len(m.content) for m in messages) / self.chars_per_token
        return self.prices.cost(int(prompt_tokens), params.max_tokens)

    def _reserve_budget(self, messages: Sequence[Message], params: SamplingParams) -> float:
        """Reserve the call's worst-case cost (under a lock, so concurrent calls cannot all pass
        the check together); ``_settle`` releases it once the call is ledgered."""
        if self.budget_usd is None:
            return 0.0
        worst_case = self.worst_case_cost(messages, params)
        with self._budget_lock:
            spent = self.ledger.spent()
            if spent + self._reserved + worst_case > self.budget_usd:
                raise BudgetExceeded(
                    f"{self.name}: next call could cost up to ${worst_case:.4f}; spent ${spent:.4f} "
                    f"(+${self._reserved:.4f} in flight) of budget_usd=${self.budget_usd:.4f}"
                )
            self._reserved += worst_case
        return worst_case

    def _settle(self, reserved: float) -> None:
        with self._budget_lock:
            self._reserved -= reserved

    def ask(self, messages: Sequence[Message], params: SamplingParams, request_index: int = 0,
            purpose: str = "", accept: Callable[[str], bool] | None = None) -> Reply:
        """One reply for (messages, params, request_index): from the cache, else the backend."""
        messages = list(messages)
        backend_name, model, settings = self.backend.cache_identity
        key = cache_key(backend_name, model, messages, params, request_index, settings)
        # the cache key in the ledger lets a run's transcript be exported and replayed later
        entry = {"backend": backend_name, "model": model, "purpose": purpose, "request_index": request_index,
                 "key": key}
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            hit.request_index = request_index
            self.ledger.append({**entry, "status": "ok", "cache_hit": True, "input_tokens": hit.input_tokens,
                                "output_tokens": hit.output_tokens, "cost_usd": 0.0, "latency_s": 0.0})
            return hit
        reserved = self._reserve_budget(messages, params)
        try:
            reply = self._call_with_retries(messages, params, entry)
            reply.cost_usd = self.prices.cost(reply.input_tokens, reply.output_tokens)
            reply.request_index = request_index
            accepted = accept is None or accept(reply.text)
            self.ledger.append({**entry, "status": "ok" if accepted else "rejected", "cache_hit": False,
                                "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                                "cost_usd": reply.cost_usd, "latency_s": round(reply.latency_s, 3),
                                **({"usage_estimated": True} if reply.usage_estimated else {})})
        finally:
            self._settle(reserved)
        if reserved and reply.cost_usd > reserved:
            log.warning("%s: a call cost $%.4f, more than its reserved worst case $%.4f (the provider counted"
                        " more tokens than %.1f characters per token)", self.name, reply.cost_usd, reserved,
                        self.chars_per_token)
        if accepted and self.cache is not None:
            self.cache.put(key, reply)
        return reply

    def _call_with_retries(self, messages: list[Message], params: SamplingParams, entry: dict) -> Reply:
        for attempt in range(self.retry.max_attempts):
            started = time.perf_counter()
            try:
                reply = self.backend.complete(messages, params)
            except TransientTeacherError as error:
                self.ledger.append({**entry, "status": "error", "error": str(error)[:300], "cost_usd": 0.0})
                if attempt + 1 >= self.retry.max_attempts:
                    raise
                wait = self.retry.delay(attempt, error.retry_after)
                log.warning("%s (attempt %d/%d); retrying in %.1fs", error, attempt + 1,
                            self.retry.max_attempts, wait)
                time.sleep(wait)
                continue
            except TeacherError as error:
                self.ledger.append({**entry, "status": "error", "error": str(error)[:300], "cost_usd": 0.0})
                raise
            reply.latency_s = reply.latency_s or time.perf_counter() - started
            reply.backend, reply.model = reply.backend or self.backend.name, reply.model or self.backend.model
            return reply
        raise AssertionError("unreachable")

    def ask_many(self, requests: Sequence[Request], accept: Callable[[str], bool] | None = None,
                 return_exceptions: bool = False) -> list[Reply | TeacherError]:
        """Replies in request order, ``max_concurrency`` calls in flight at a time. With
        ``return_exceptions`` a failed request gives its TeacherError in its place (the others'
        replies, already paid for, are kept); otherwise the first error is raised."""

        def one(r: Request) -> Reply | TeacherError:
            try:
                return self.ask(r.messages, r.params, r.request_index, r.purpose, accept)
            except TeacherError as error:
                if not return_exceptions:
                    raise
                return error

        if self.max_concurrency <= 1 or len(requests) <= 1:
            return [one(r) for r in requests]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = [pool.submit(one, r) for r in requests]
            return [future.result() for future in futures]

    def with_seed(self, params: SamplingParams, request_index: int) -> SamplingParams:
        """Distinct sampling seed per request index (backends that take a seed)."""
        return replace(params, seed=(params.seed or 0) + request_index)
