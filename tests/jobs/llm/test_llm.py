"""The LLM client through the real ``openai`` client against a loopback server that misbehaves on
demand, the response cache (local and S3), the mock provider and the hf provider on a tiny model."""

# ruff: noqa: F811  (test parameters are named after the imported `openai_server` fixture)
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs.common import store
from jobs.common.errors import InputError
from jobs.llm import LLMClient, LLMConfig, request_hash
from jobs.llm.cache import ResponseCache
from jobs.llm.mock import mock_text
from jobs.llm.openai import retry_after_seconds
from tests.fakes.openai_server import FakeOpenAI, Reply, message_key, openai_server  # noqa: F401  (the fixture)


def convo(i: int | str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are kind."}, {"role": "user", "content": f"question {i}"}]


def openai_cfg(server: FakeOpenAI, **kw: object) -> LLMConfig:
    base = {"provider": "openai", "model": "teacher", "base_url": server.base_url, "concurrency": 8}
    return LLMConfig.model_validate(base | kw)


def client(cfg: LLMConfig, cache: str | None = None) -> LLMClient:
    return LLMClient(cfg, cache, backoff_s=0.001, max_backoff_s=0.01)


def test_throttled_and_failing_server_every_record_arrives_exactly_once(openai_server: FakeOpenAI) -> None:
    openai_server.latency = 0.01
    openai_server.per_key = ["429", "500"]  # every conversation: throttled, then a 500, then answered
    reqs = [(convo(i), 0) for i in range(30)]
    seen: list[int] = []
    with client(openai_cfg(openai_server)) as c:
        results = c.chat_many(reqs, on_result=lambda i, r: seen.append(i))
        assert c.stats["retries"] == 60
    assert [r.text for r in results] == [f"Answer to: question {i}" for i in range(30)]
    assert all(r.ok and r.attempts == 3 and not r.cached for r in results)
    assert sorted(seen) == list(range(30))
    assert all(openai_server.answered[message_key(m)] == 1 for m, _ in reqs)
    assert all(openai_server.count(m) == 3 for m, _ in reqs)


def test_retry_after_is_honoured(openai_server: FakeOpenAI) -> None:
    openai_server.retry_after = "0.4"
    openai_server.script("429")
    with client(openai_cfg(openai_server, concurrency=1)) as c:
        (r,) = c.chat_many([(convo(0), 0)])
    assert r.ok and r.attempts == 2
    (t1, _, s1), (t2, _, s2) = openai_server.events
    assert (s1, s2) == (429, 200)
    assert t2 - t1 >= 0.39  # the client's own backoff here is 1 ms: only the header explains the wait


def test_401_stops_at_once_with_an_input_error(
    openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREED_TEST_KEY", "sk-wrongwrongwrongwrong")
    openai_server.api_key = "sk-rightrightrightright"
    cfg = openai_cfg(openai_server, concurrency=4, api_key_env="CREED_TEST_KEY")
    with client(cfg) as c, pytest.raises(InputError, match=r"HTTP 401.*\$CREED_TEST_KEY") as info:
        c.chat_many([(convo(i), 0) for i in range(200)])
    assert "sk-wrong" not in str(info.value)  # the key itself is never echoed
    assert len(openai_server.requests) <= 4  # the requests already in flight, no retries, no more


def test_right_key_is_sent(openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREED_TEST_KEY", "sk-rightrightrightright")
    openai_server.api_key = "sk-rightrightrightright"
    with client(openai_cfg(openai_server, api_key_env="CREED_TEST_KEY")) as c:
        assert c.chat(convo(1)).ok


def test_unknown_model_stops_with_an_input_error(openai_server: FakeOpenAI) -> None:
    openai_server.models = {"teacher"}
    with (
        client(openai_cfg(openai_server, model="no-such-model")) as c,
        pytest.raises(InputError, match="unknown model 'no-such-model'"),
    ):
        c.chat_many([(convo(i), 0) for i in range(20)])
    assert len(openai_server.requests) <= 8


@pytest.mark.parametrize("fault", ["malformed", "bad_shape", "400"])
def test_bad_body_is_an_error_result_not_a_crash(openai_server: FakeOpenAI, fault: str) -> None:
    openai_server.script(fault)
    with client(openai_cfg(openai_server, concurrency=1)) as c:
        results = c.chat_many([(convo(i), 0) for i in range(3)])
    assert results[0].error is not None and results[0].finish_reason == "error"
    assert results[0].error.startswith("HTTP 400" if fault == "400" else "malformed response body")
    assert results[0].attempts == 1  # not retried: the same request would get the same answer
    assert [r.ok for r in results[1:]] == [True, True]


def test_persistent_5xx_gives_up_after_max_retries(openai_server: FakeOpenAI) -> None:
    openai_server.always = "503"
    with client(openai_cfg(openai_server, max_retries=2)) as c:
        (r,) = c.chat_many([(convo(0), 0)])
    assert r.error == "HTTP 503: The server had an error (gave up after 3 attempts)"
    assert r.attempts == 3 and openai_server.count(convo(0)) == 3


def test_timeout_is_retried(openai_server: FakeOpenAI) -> None:
    openai_server.hang_s = 3.0
    openai_server.script("hang")
    with client(openai_cfg(openai_server, concurrency=1, timeout_s=0.3)) as c:
        (r,) = c.chat_many([(convo(0), 0)])
    assert r.ok and r.attempts == 2


def test_cache_answers_repeat_requests_and_never_caches_errors(
    openai_server: FakeOpenAI, store_root: str
) -> None:
    cache = store.join(store_root, "cache", "llm")
    cfg = openai_cfg(openai_server, concurrency=1)
    reqs = [(convo(i), 0) for i in range(4)]
    openai_server.script("malformed")
    with client(cfg, cache) as c:
        first = c.chat_many(reqs)
    assert [r.ok for r in first] == [False, True, True, True]
    assert ResponseCache(cache).hashes() == {r.request_hash for r in first[1:]}
    with client(cfg, cache) as c:
        second = c.chat_many(reqs)
    assert [r.cached for r in second] == [False, True, True, True]
    assert all(r.ok for r in second)
    assert [openai_server.count(m) for m, _ in reqs] == [2, 1, 1, 1]  # only the failed one re-asked
    for a, b in zip(first[1:], second[1:], strict=True):
        assert a.model_dump(exclude={"cached"}) == b.model_dump(exclude={"cached"})


def test_identical_requests_are_sent_once(openai_server: FakeOpenAI) -> None:
    with client(openai_cfg(openai_server)) as c:
        results = c.chat_many([(convo(0), 0), (convo(1), 0), (convo(0), 0), (convo(0), 1)])
    assert [r.text for r in results][:3] == [
        "Answer to: question 0",
        "Answer to: question 1",
        "Answer to: question 0",
    ]
    assert openai_server.count(convo(0)) == 2  # sample 0 once (deduplicated), sample 1 once


def test_params_and_seed_per_sample_reach_the_server(openai_server: FakeOpenAI) -> None:
    cfg = openai_cfg(openai_server, temperature=0.3, top_p=0.9, max_tokens=2, seed=10)
    with client(cfg) as c:
        results = c.chat_many([(convo(0), 0), (convo(0), 1)])
    bodies = sorted(openai_server.requests, key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [10, 11]
    assert {(b["model"], b["temperature"], b["top_p"], b["max_tokens"]) for b in bodies} == {
        ("teacher", 0.3, 0.9, 2)
    }
    assert results[0].finish_reason == "length" and results[0].text == "Answer to:"
    assert results[0].usage.completion_tokens == 2 and results[0].usage.prompt_tokens == 5


def test_responder_decides_the_reply(openai_server: FakeOpenAI) -> None:
    openai_server.responder = lambda body: Reply(text="I refuse.", finish_reason="stop")
    with client(openai_cfg(openai_server)) as c:
        assert c.chat(convo(0)).text == "I refuse."


def test_request_hash_covers_what_changes_the_answer_only() -> None:
    a = LLMConfig(provider="openai", model="m", base_url="http://a/v1", seed=1)
    h = request_hash(a, convo(0), 0)
    assert h == request_hash(a.model_copy(update={"base_url": "http://b/v1", "concurrency": 99}), convo(0), 0)
    others = {
        request_hash(a, convo(0), 1),
        request_hash(a, convo(1), 0),
        request_hash(a.model_copy(update={"temperature": 0.1}), convo(0), 0),
        request_hash(a.model_copy(update={"model": "n"}), convo(0), 0),
        request_hash(a.model_copy(update={"seed": 2}), convo(0), 0),
        request_hash(a.model_copy(update={"provider": "hf"}), convo(0), 0),
    }
    assert h not in others and len(others) == 6


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "100000"}) == 120.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({}) is None


def test_mock_provider_is_deterministic_and_offline(tmp_path: Path) -> None:
    cfg = LLMConfig(provider="mock", max_tokens=6)
    reqs = [(convo(i), 0) for i in range(3)]
    with LLMClient(cfg, str(tmp_path / "cache")) as c:
        a = c.chat_many(reqs)
    with LLMClient(cfg) as c:
        b = c.chat_many(reqs)
    assert [r.text for r in a] == [r.text for r in b]
    assert all(r.finish_reason == "length" and len(r.text.split()) == 6 for r in a)
    text, finish = mock_text("ab" * 32, convo(7), 100)
    assert finish == "stop" and "question 7" in text and text.endswith("(mock answer abababab)")


def test_empty_model_is_rejected() -> None:
    with pytest.raises(InputError, match="needs a model"):
        LLMClient(LLMConfig(provider="openai", model=""))


def test_hf_provider_generates_with_a_tiny_chat_model(tiny_llama: Path, tmp_path: Path) -> None:
    model = tmp_path / "teacher"
    shutil.copytree(tiny_llama, model)
    cfg = LLMConfig(provider="hf", model=str(model), temperature=0, max_tokens=6, concurrency=3)
    reqs = [(convo(i), 0) for i in ("a", "bb bb", "ccc ccc ccc", "d")]
    with LLMClient(cfg, str(tmp_path / "cache")) as c:
        batched = c.chat_many(reqs)
    one = LLMConfig(provider="hf", model=str(model), temperature=0, max_tokens=6, concurrency=1)
    with LLMClient(one) as c:
        single = c.chat_many(reqs)
    assert all(r.ok and r.finish_reason in {"stop", "length"} for r in batched)
    assert all(0 < r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 5 for r in batched)
    assert any(r.text for r in batched)
    # Left padding is right: a batched prompt gets the same greedy answer as the prompt alone.
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.usage for r in batched] == [r.usage for r in single]
    with LLMClient(cfg, str(tmp_path / "cache")) as c:
        assert all(r.cached for r in c.chat_many(reqs))
