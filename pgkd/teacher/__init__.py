"""The teacher layer: one ``Backend`` interface over Bedrock, Anthropic, OpenAI-compatible
servers, in-process models and fakes, wrapped by ``TeacherClient`` (cache, retries, ledger,
budget). ``build_teacher`` makes a client from the ``teacher`` config group."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from pgkd.teacher.anthropic_api import AnthropicBackend
from pgkd.teacher.base import (Backend, BudgetExceeded, CacheMiss, Message, Reply, SamplingParams,
                               TeacherAuthError, TeacherError, TeacherRequestError, TransientTeacherError)
from pgkd.teacher.bedrock import BedrockBackend
from pgkd.teacher.client import Prices, Request, RetryPolicy, TeacherClient
from pgkd.teacher.fakes import ReplayBackend, ScriptedTeacher
from pgkd.teacher.file_queue import FileQueueBackend
from pgkd.teacher.local import HFBackend, LlamaCppBackend
from pgkd.teacher.openai_api import OpenAIBackend
from pgkd.teacher.store import CostLedger, ResponseCache

__all__ = [
    "AnthropicBackend", "Backend", "BedrockBackend", "BudgetExceeded", "CacheMiss", "CostLedger", "FileQueueBackend",
    "HFBackend", "LlamaCppBackend", "Message", "OpenAIBackend", "Prices", "ReplayBackend", "Reply",
    "Request", "ResponseCache", "RetryPolicy", "SamplingParams", "ScriptedTeacher", "TeacherAuthError",
    "TeacherClient", "TeacherError", "TeacherRequestError", "TransientTeacherError", "build_teacher",
]


def build_teacher(cfg: DictConfig, ledger_path: str | Path, dataset=None) -> TeacherClient:
    """A TeacherClient from a ``teacher`` config (see conf/teacher/*.yaml)."""
    backend: Backend = instantiate(cfg.backend)
    if dataset is not None:
        backend.bind_dataset(dataset)
    cache = ResponseCache(cfg.cache_path) if cfg.get("cache_path") else None
    if cfg.get("transcripts"):
        from glob import glob

        from pgkd.transcripts import load_transcripts

        if cache is None:
            raise ValueError("teacher.transcripts needs teacher.cache_path (replies are replayed from the cache)")
        paths = sorted(p for pattern in cfg.transcripts for p in glob(str(pattern)))
        load_transcripts(paths, cache)
    return TeacherClient(
        backend,
        ledger=CostLedger(ledger_path),
        cache=cache,
        prices=Prices(**cfg.get("prices", {})),
        retry=RetryPolicy(**cfg.get("retry", {})),
        budget_usd=cfg.get("budget_usd"),
        max_concurrency=cfg.get("max_concurrency", 4),
        name=cfg.name,
        samples_per_call=cfg.get("samples_per_call", 32),
    )
