"""The teacher layer offline: real SDK clients against loopback servers speaking the Anthropic
Messages and OpenAI chat-completions protocols, Bedrock through botocore's Stubber, and the
cache / ledger / budget machinery."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import boto3
import pytest
from botocore.stub import Stubber

from pgkd.teacher import (AnthropicBackend, BedrockBackend, BudgetExceeded, CacheMiss, CostLedger, Message,
                          OpenAIBackend, Prices, ReplayBackend, ResponseCache, RetryPolicy, SamplingParams,
                          ScriptedTeacher, TeacherAuthError, TeacherClient, TransientTeacherError)
from pgkd.teacher.client import Request
from tests.conftest import ROOT
from tests.loopback import (LoopbackServer, Scripted, anthropic_error, anthropic_message, openai_completion,
                            openai_error)

MESSAGES = [Message("system", "You write data."), Message("user", "Give me 2 samples.")]
PARAMS = SamplingParams(temperature=0.7, max_tokens=64)
FAST = RetryPolicy(max_attempts=1)


def client_for(backend, tmp_path, **kwargs) -> TeacherClient:
    return TeacherClient(backend, CostLedger(tmp_path / "ledger.jsonl"), ResponseCache(tmp_path / "cache.sqlite"),
                         **{"retry": FAST, **kwargs})


@pytest.fixture
def anthropic_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key-test-key")


# -- Anthropic Messages API -------------------------------------------------------------------

def test_anthropic_success_reports_provider_usage_and_cost(tmp_path, anthropic_key):
    with LoopbackServer([Scripted(body=anthropic_message('[{"text": "a", "label": "x"}]', 120, 30))]) as server:
        client = client_for(AnthropicBackend(model="claude-test", base_url=server.url), tmp_path,
                            prices=Prices(3.0, 15.0))
        reply = client.ask(MESSAGES, PARAMS, purpose="unit")
    assert reply.text == '[{"text": "a", "label": "x"}]'
    assert (reply.input_tokens, reply.output_tokens) == (120, 30)
    assert reply.cost_usd == pytest.approx((120 * 3 + 30 * 15) / 1e6)
    sent = server.requests[0]
    assert sent["path"] == "/v1/messages"
    auth = sent["headers"].get("x-api-key") or sent["headers"]["authorization"]
    assert auth.endswith("fake-key-test-key")  # header name depends on the SDK version
    assert sent["json"]["system"] == "You write data." and sent["json"]["temperature"] == 0.7
    assert sent["json"]["messages"] == [{"role": "user", "content": "Give me 2 samples."}]


def test_anthropic_429_honours_retry_after(tmp_path, anthropic_key):
    responses = [Scripted(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "0.3"}),
                 Scripted(body=anthropic_message("ok"))]
    with LoopbackServer(responses) as server:
        client = client_for(AnthropicBackend(base_url=server.url, max_retries=2), tmp_path)
        started = time.perf_counter()
        assert client.ask(MESSAGES, PARAMS).text == "ok"
    assert len(server.requests) == 2 and time.perf_counter() - started >= 0.3


def test_anthropic_500_is_retried(tmp_path, anthropic_key):
    responses = [Scripted(500, anthropic_error("api_error", "boom")), Scripted(body=anthropic_message("fine"))]
    with LoopbackServer(responses) as server:
        client = client_for(AnthropicBackend(base_url=server.url, max_retries=2), tmp_path)
        assert client.ask(MESSAGES, PARAMS).text == "fine"
    assert len(server.requests) == 2


def test_anthropic_client_retries_after_sdk_gives_up(tmp_path, anthropic_key):
    responses = [Scripted(529, anthropic_error("overloaded_error", "busy")), Scripted(body=anthropic_message("late"))]
    with LoopbackServer(responses) as server:
        client = client_for(AnthropicBackend(base_url=server.url, max_retries=0), tmp_path,
                            retry=RetryPolicy(max_attempts=3, base_delay_s=0.01))
        assert client.ask(MESSAGES, PARAMS).text == "late"
    statuses = [e["status"] for e in client.ledger.entries()]
    assert statuses == ["error", "ok"]


def test_anthropic_hung_request_times_out(tmp_path, anthropic_key):
    with LoopbackServer([Scripted(body=anthropic_message("too late"), delay_s=3)]) as server:
        client = client_for(AnthropicBackend(base_url=server.url, timeout_s=0.3, max_retries=0), tmp_path)
        with pytest.raises(TransientTeacherError, match="anthropic: timed out"):
            client.ask(MESSAGES, PARAMS)
    assert len(client.cache) == 0


def test_anthropic_malformed_body(tmp_path, anthropic_key):
    with LoopbackServer([Scripted(body=b'{"id": "msg", "content": [')]) as server:
        client = client_for(AnthropicBackend(base_url=server.url, max_retries=0), tmp_path)
        with pytest.raises(TransientTeacherError, match="anthropic: malformed"):
            client.ask(MESSAGES, PARAMS)
    assert len(client.cache) == 0


def test_anthropic_auth_failure_names_the_env_var_and_is_not_retried(tmp_path, anthropic_key):
    with LoopbackServer([Scripted(401, anthropic_error("authentication_error", "invalid x-api-key"))]) as server:
        client = client_for(AnthropicBackend(base_url=server.url, max_retries=2), tmp_path,
                            retry=RetryPolicy(max_attempts=3, base_delay_s=0.01))
        with pytest.raises(TeacherAuthError, match="ANTHROPIC_API_KEY"):
            client.ask(MESSAGES, PARAMS)
    assert len(server.requests) == 1
    assert "fake-key-test-key" not in (tmp_path / "ledger.jsonl").read_text()


def test_anthropic_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(TeacherAuthError, match="set the environment variable ANTHROPIC_API_KEY"):
        client_for(AnthropicBackend(base_url="http://127.0.0.1:9"), tmp_path).ask(MESSAGES, PARAMS)


# -- OpenAI-compatible chat completions -------------------------------------------------------

def test_openai_success_with_response_format_schema(tmp_path):
    schema = {"type": "array", "items": {"type": "object"}}
    with LoopbackServer([Scripted(body=openai_completion('{"samples": []}', 40, 9))]) as server:
        backend = OpenAIBackend(model="local-model", base_url=server.url + "/v1", require_key=False,
                                use_response_format=True)
        reply = client_for(backend, tmp_path).ask(MESSAGES, SamplingParams(seed=7, json_schema=schema))
    assert (reply.input_tokens, reply.output_tokens) == (40, 9)
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["json"]["seed"] == 7
    assert sent["json"]["response_format"]["json_schema"]["schema"]["properties"]["samples"] == schema
    assert sent["json"]["messages"][0] == {"role": "system", "content": "You write data."}


def test_openai_429_retry_after_then_500_then_success(tmp_path):
    responses = [Scripted(429, openai_error("rate limited", "rate_limit_exceeded"), {"retry-after": "0.2"}),
                 Scripted(500, openai_error("oops", "server_error")), Scripted(body=openai_completion("ok"))]
    with LoopbackServer(responses) as server:
        backend = OpenAIBackend(model="m", base_url=server.url + "/v1", require_key=False, max_retries=3)
        assert client_for(backend, tmp_path).ask(MESSAGES, PARAMS).text == "ok"
    assert len(server.requests) == 3


def test_openai_timeout_malformed_and_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with LoopbackServer([Scripted(body=openai_completion("x"), delay_s=3)]) as server:
        backend = OpenAIBackend(model="m", base_url=server.url + "/v1", timeout_s=0.3, max_retries=0)
        with pytest.raises(TransientTeacherError, match="timed out"):
            client_for(backend, tmp_path).ask(MESSAGES, PARAMS)
    with LoopbackServer([Scripted(body=b"<html>proxy error</html>")]) as server:
        backend = OpenAIBackend(model="m", base_url=server.url + "/v1", max_retries=0)
        with pytest.raises(TransientTeacherError, match="malformed"):
            client_for(backend, tmp_path).ask(MESSAGES, PARAMS)
    with LoopbackServer([Scripted(401, openai_error("bad key", "invalid_api_key"))]) as server:
        backend = OpenAIBackend(model="m", base_url=server.url + "/v1", max_retries=2)
        with pytest.raises(TeacherAuthError, match="OPENAI_API_KEY"):
            client_for(backend, tmp_path).ask(MESSAGES, PARAMS)
        assert len(server.requests) == 1


# -- Bedrock Converse via botocore's Stubber --------------------------------------------------

def converse_response(text: str) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 21, "outputTokens": 8, "totalTokens": 29}, "metrics": {"latencyMs": 5}}


@pytest.fixture
def bedrock_stub():
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                          aws_secret_access_key="secret")
    with Stubber(client) as stubber:
        yield client, stubber


def test_bedrock_success_and_request_shape(tmp_path, bedrock_stub):
    client, stubber = bedrock_stub
    expected = {"modelId": "anthropic.claude-3-sonnet-20240229-v1:0",
                "messages": [{"role": "user", "content": [{"text": "Give me 2 samples."}]}],
                "system": [{"text": "You write data."}],
                "inferenceConfig": {"maxTokens": 64, "temperature": 0.7}}
    stubber.add_response("converse", converse_response("hello"), expected)
    teacher = client_for(BedrockBackend(client=client), tmp_path, prices=Prices(3.0, 15.0))
    reply = teacher.ask(MESSAGES, PARAMS)
    assert (reply.text, reply.input_tokens, reply.output_tokens) == ("hello", 21, 8)
    assert reply.cost_usd == pytest.approx((21 * 3 + 8 * 15) / 1e6)
    stubber.assert_no_pending_responses()


def test_bedrock_throttling_is_retried(tmp_path, bedrock_stub):
    client, stubber = bedrock_stub
    stubber.add_client_error("converse", "ThrottlingException", "Too many requests", 429)
    stubber.add_response("converse", converse_response("after throttle"))
    teacher = client_for(BedrockBackend(client=client), tmp_path, retry=RetryPolicy(3, 0.01, 0.05))
    assert teacher.ask(MESSAGES, PARAMS).text == "after throttle"
    assert [e["status"] for e in teacher.ledger.entries()] == ["error", "ok"]


def test_bedrock_access_denied_names_credentials_and_is_not_retried(tmp_path, bedrock_stub):
    client, stubber = bedrock_stub
    stubber.add_client_error("converse", "AccessDeniedException", "not authorized", 403)
    teacher = client_for(BedrockBackend(client=client), tmp_path, retry=RetryPolicy(3, 0.01, 0.05))
    with pytest.raises(TeacherAuthError, match="AWS credentials"):
        teacher.ask(MESSAGES, PARAMS)
    stubber.assert_no_pending_responses()


# -- cache, ledger, budget, replay, concurrency ------------------------------------------------

def test_second_identical_call_hits_the_cache(tmp_path, anthropic_key):
    with LoopbackServer([Scripted(body=anthropic_message("once", 50, 10))]) as server:
        client = client_for(AnthropicBackend(base_url=server.url), tmp_path, prices=Prices(3.0, 15.0))
        first = client.ask(MESSAGES, PARAMS, request_index=0)
        again = client.ask(MESSAGES, PARAMS, request_index=0)
        other = client.ask(MESSAGES, PARAMS, request_index=1)  # asked again on purpose: a new sample
    assert len(server.requests) == 2
    assert not first.cache_hit and again.cache_hit and again.text == "once" and again.cost_usd == 0
    assert not other.cache_hit
    totals = client.ledger.totals()
    assert totals["calls"] == 3 and totals["cache_hits"] == 1
    assert totals["cost_usd"] == pytest.approx(2 * (50 * 3 + 10 * 15) / 1e6)


def test_rejected_reply_is_not_cached(tmp_path, anthropic_key):
    with LoopbackServer([Scripted(body=anthropic_message("not json at all"))]) as server:
        client = client_for(AnthropicBackend(base_url=server.url), tmp_path)
        client.ask(MESSAGES, PARAMS, accept=lambda text: text.startswith("["))
        client.ask(MESSAGES, PARAMS, accept=lambda text: text.startswith("["))
    assert len(server.requests) == 2 and len(client.cache) == 0
    assert [e["status"] for e in client.ledger.entries()] == ["rejected", "rejected"]


def test_processes_creating_and_writing_the_cache_at_once_lose_nothing(tmp_path):
    # Four processes open 20 fresh cache files in the same order, so every file's creation (the
    # switch to WAL) is raced; then all write into the last one.
    script = (
        "import sys, time; from pgkd.teacher import ResponseCache, Reply\n"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))\n"
        "for n in range(20): cache = ResponseCache(f'{sys.argv[1]}/c{n}.sqlite')\n"
        "for i in range(100): cache.put(f'{sys.argv[2]}-{i}', Reply(text=str(i), backend='b', model='m'))\n"
    )
    start = str(time.time() + 3.0)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag, start], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)
             for tag in "abcd"]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    cache = ResponseCache(tmp_path / "c19.sqlite")
    assert len(cache) == 400 and cache.get("d-99").text == "99"


class CountingBackend(ScriptedTeacher):
    """A fake that reports fixed usage, to test prices and budgets."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def complete(self, messages, params):
        from pgkd.teacher import Reply

        self.calls += 1
        return Reply(text=f"reply {self.calls}", input_tokens=1000, output_tokens=500)


def test_budget_stops_before_a_call_that_could_exceed_it(tmp_path):
    backend = CountingBackend()
    prices = Prices(input_per_mtok=1000.0, output_per_mtok=2000.0)  # $1 + $1 per call as reported
    client = TeacherClient(backend, CostLedger(tmp_path / "l.jsonl"), None, prices=prices, budget_usd=5.0)
    params = SamplingParams(max_tokens=500)
    with pytest.raises(BudgetExceeded, match="budget_usd=\\$5.0000"):
        for index in range(10):
            client.ask([Message("user", "x" * 4000)], params, request_index=index)
    # each call costs $2 and could cost $2 (1,000 prompt tokens est. + 500 max tokens): after two
    # calls ($4 spent) a third could reach $6 > $5, so it is never made
    assert backend.calls == 2
    assert sum(e["cost_usd"] for e in client.ledger.entries()) == pytest.approx(4.0)
    assert client.ledger.spent() == pytest.approx(4.0) and client.ledger.spent() <= 5.0


def test_replay_answers_from_cache_and_fails_clearly_on_a_miss(tmp_path):
    backend = CountingBackend()
    cache = ResponseCache(tmp_path / "c.sqlite")
    TeacherClient(backend, CostLedger(tmp_path / "a.jsonl"), cache).ask(MESSAGES, PARAMS)
    replay = TeacherClient(ReplayBackend(CountingBackend()), CostLedger(tmp_path / "b.jsonl"), cache,
                           retry=FAST)
    assert replay.ask(MESSAGES, PARAMS).text == "reply 1"
    with pytest.raises(CacheMiss, match="no cached reply of counting"):
        replay.ask(MESSAGES, PARAMS, request_index=5)
    assert backend.calls == 1


def test_ask_many_keeps_order_with_concurrency(tmp_path, anthropic_key):
    responses = [Scripted(body=anthropic_message("same"), delay_s=0.3)]
    with LoopbackServer(responses) as server:
        client = client_for(AnthropicBackend(base_url=server.url), tmp_path, max_concurrency=4)
        client.ask(MESSAGES, PARAMS, request_index=99)  # SDK import and client set-up stay out of the timing
        started = time.perf_counter()
        replies = client.ask_many([Request(MESSAGES, PARAMS, i) for i in range(8)])
        elapsed = time.perf_counter() - started
    assert [r.request_index for r in replies] == list(range(8))
    assert len(server.requests) == 9 and elapsed < 8 * 0.3 * 0.6  # ran in parallel
    assert json.loads((tmp_path / "ledger.jsonl").read_text().splitlines()[0])["backend"] == "anthropic"


def test_hf_backend_generates_with_a_chat_template(tmp_path):
    """A tiny random causal LM saved locally stands in for a hub model."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from pgkd.students.encoders import MINILM, resolve
    from pgkd.teacher import HFBackend

    tokenizer = AutoTokenizer.from_pretrained(resolve(MINILM))
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=256))
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    client = client_for(HFBackend(str(tmp_path / "lm"), dtype="float32"), tmp_path)
    reply = client.ask(MESSAGES, SamplingParams(temperature=1.0, max_tokens=12, seed=3))
    assert reply.output_tokens == 12 and reply.input_tokens > 10 and reply.backend == "hf"
    assert client.ask(MESSAGES, SamplingParams(temperature=1.0, max_tokens=12, seed=3)).cache_hit


class SlowScripted(ScriptedTeacher):
    """A scripted teacher that takes its time, so concurrent calls overlap."""

    def complete(self, messages, params):
        time.sleep(0.15)
        return super().complete(messages, params)


def test_budget_holds_under_concurrency_in_a_zero_shot_run(tmp_path, ag_news_small):
    """Eight calls in flight must not all pass the budget check before any is paid for: the
    worst case is reserved under a lock and settled after the call."""
    from omegaconf import OmegaConf

    from pgkd.zero_shot import run_zero_shot

    prompt_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "prompt" / "pgkd.yaml"))
    backend = SlowScripted()
    backend.bind_dataset(ag_news_small)
    client = TeacherClient(backend, CostLedger(tmp_path / "l.jsonl"), None, prices=Prices(input_per_mtok=1000.0),
                           budget_usd=1.0, max_concurrency=8)
    request = [Message("user", "x" * 1000)]
    worst = client.worst_case_cost(request, SamplingParams(max_tokens=64))
    result = run_zero_shot(ag_news_small, client, prompt_cfg, tmp_path, limit=40)
    spent = client.ledger.spent()
    assert result["stopped"] == "budget" and 0 < result["n_evaluated"] < 40
    assert 0 < spent <= 1.0 and worst > 0
    assert client._reserved == pytest.approx(0.0)  # every reservation was settled


# --- teacher=file: requests as files, replies from whoever answers ------------------------------

class QueueAnswerer:
    """A thread that answers a queue folder the way a helper would: read each unanswered
    ``*.prompt.txt``, write the reply under another name, rename it into place."""

    def __init__(self, folder, answer, atomic=True):
        import threading

        self.folder, self.answer, self.atomic = folder, answer, atomic
        self.answered: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for prompt in sorted(self.folder.glob("*.prompt.txt")):
                request_id = prompt.name.removesuffix(".prompt.txt")
                reply = self.folder / f"{request_id}.reply.txt"
                if reply.exists() or request_id in self.answered:
                    continue
                request = json.loads((self.folder / f"{request_id}.request.json").read_text())
                text = self.answer(prompt.read_text(), request)
                if self.atomic:
                    (self.folder / f"{request_id}.reply.tmp").write_text(text)
                    (self.folder / f"{request_id}.reply.tmp").rename(reply)
                else:  # a careless writer: half now, the rest a moment later
                    with reply.open("w") as handle:
                        handle.write(text[: len(text) // 2])
                        handle.flush()
                        time.sleep(0.1)
                        handle.write(text[len(text) // 2:])
                self.answered.append(request_id)
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def test_file_teacher_is_answered_through_the_queue_and_cached(tmp_path):
    from pgkd.teacher import FileQueueBackend

    queue = tmp_path / "queue"
    backend = FileQueueBackend(queue, model="helper-model", poll_interval_s=0.05, timeout_s=30)
    client = TeacherClient(backend, CostLedger(tmp_path / "l.jsonl"), ResponseCache(tmp_path / "c.sqlite"))
    with QueueAnswerer(queue, lambda prompt, request: json.dumps([{"text": "ok " + prompt[-20:], "label": "a"}])) as helper:
        reply = client.ask(MESSAGES, PARAMS)
        again = client.ask(MESSAGES, PARAMS)
    assert "Give me 2 samples." in reply.text and again.cache_hit and len(helper.answered) == 1
    request_id = helper.answered[0]
    request = json.loads((queue / f"{request_id}.request.json").read_text())
    assert request["messages"][1]["content"] == "Give me 2 samples." and request["params"]["max_tokens"] == 64
    assert "[system]\nYou write data." in (queue / f"{request_id}.prompt.txt").read_text()
    entry = client.ledger.entries()[0]
    assert entry["usage_estimated"] and entry["input_tokens"] > 0 and entry["output_tokens"] > 0


def test_file_teacher_times_out_with_a_message_naming_the_reply_file(tmp_path):
    from pgkd.teacher import FileQueueBackend

    backend = FileQueueBackend(tmp_path, poll_interval_s=0.05, timeout_s=0.3)
    with pytest.raises(TransientTeacherError, match=r"write the answer to .*\.reply\.txt"):
        backend.complete(MESSAGES, PARAMS)
    assert len(list(tmp_path.glob("*.prompt.txt"))) == 1 and not list(tmp_path.glob("*.reply.txt"))


def test_file_teacher_never_reads_a_half_written_reply(tmp_path):
    from pgkd.teacher import FileQueueBackend

    backend = FileQueueBackend(tmp_path, poll_interval_s=0.3, timeout_s=30)
    full = json.dumps([{"text": "x" * 5000, "label": "a"}])
    request_id = backend.submit(MESSAGES, PARAMS)
    (tmp_path / f"{request_id}.reply.txt.partial").write_text(full[:100])  # another name: ignored
    with QueueAnswerer(tmp_path, lambda prompt, request: full, atomic=False):
        reply = backend.complete(MESSAGES, PARAMS)
    assert reply.text == full


def test_a_pgkd_run_with_the_file_teacher(compose, tmp_path):
    """The whole loop through teacher=file: parsing, ledger and resume work as with any backend."""
    from pgkd.experiment import run

    def answer(prompt, request):
        n = int(prompt.split("please generate ")[1].split()[0])
        return json.dumps([{"text": f"{label} news item number {i} about {label.lower()} matters", "label": label}
                           for i, label in zip(range(n), ["World", "Sports", "Business", "Sci/Tech"] * n)])

    cfg = compose("debug=fdr", "teacher=file", "teacher.backend.model=test-helper",
                  "teacher.backend.poll_interval_s=0.05", "dataset.n_annotated=120", "pgkd.num_kd_steps=1",
                  "pgkd.samples_per_step=8", f"teacher.backend.queue_dir={tmp_path / 'queue'}",
                  f"teacher.cache_path={tmp_path / 'cache.sqlite'}")
    with QueueAnswerer(tmp_path / "queue", answer) as helper:
        metrics = run(cfg, tmp_path / "run")
    assert metrics["steps"][1]["accepted"] == 8 and len(helper.answered) == 1
    assert metrics["teacher"]["model"] == "test-helper" and metrics["teacher"]["calls"] == 1
