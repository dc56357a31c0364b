"""The real offline teacher (slow: needs `make teacher`): schema-constrained generation parses."""

from __future__ import annotations

import pytest

from pgkd.parsing import parse_samples
from pgkd.prompt import generation_schema
from pgkd.teacher import CostLedger, LlamaCppBackend, Message, SamplingParams, TeacherClient
from tests.conftest import ROOT

MODEL = ROOT / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
TAXONOMY = ["World", "Sports", "Business", "Sci/Tech"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not MODEL.exists(), reason="run `make teacher` first")]


def test_llamacpp_writes_schema_valid_samples(tmp_path):
    pytest.importorskip("llama_cpp")
    client = TeacherClient(LlamaCppBackend(str(MODEL), n_ctx=2048), CostLedger(tmp_path / "ledger.jsonl"))
    prompt = ("You are a Teacher model for a Student LM to perform topic detection on the following taxonomy:\n"
              + "\n".join(TAXONOMY) + "\n\nPlease generate 8 training samples (a news headline and one sentence) "
              "as a JSON list of dictionaries with the keys \"text\" and \"label\".")
    reply = client.ask([Message("user", prompt)], SamplingParams(temperature=1.0, max_tokens=1200, top_p=0.95,
                                                                 seed=1, json_schema=generation_schema(TAXONOMY, 8)))
    result = parse_samples(reply.text, TAXONOMY)
    assert result.parsed and len(result.samples) + sum(result.rejected.values()) == 8
    assert len(result.samples) >= 6 and all(s["label"] in TAXONOMY for s in result.samples)
    assert reply.output_tokens > 50 and reply.input_tokens > 50  # usage reported by llama.cpp
