"""The ``openai`` provider against servers that behave like the real ones creed was run against
(llama.cpp's Python server: any model name accepted, FastAPI error bodies, one request at a time) and
against no server at all: the model list check, error text, the circuit breaker, timeouts."""

# ruff: noqa: F811  (test parameters are named after the imported `openai_server` fixture)
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.common.errors import InputError, TransientError
from jobs.llm import LLMClient, LLMConfig
from jobs.llm.cache import ResponseCache
from jobs.llm.openai import error_message
from tests.fakes.openai_server import FakeOpenAI, Reply, openai_server  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[3]


def convo(i: int | str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are kind."}, {"role": "user", "content": f"question {i}"}]


def cfg_for(base_url: str, **kw: object) -> LLMConfig:
    base = {"provider": "openai", "model": "teacher", "base_url": base_url, "concurrency": 8}
    return LLMConfig.model_validate(base | kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- defect 1: a wrong model name --------------------------------------------------------------
def test_a_wrong_model_name_is_caught_from_the_model_list(openai_server: FakeOpenAI) -> None:
    openai_server.listed = ["SmolLM2-135M-Instruct"]  # and, like llama.cpp, any name is answered
    with (
        LLMClient(cfg_for(openai_server.base_url, model="SmolLM2-135M")) as c,
        pytest.raises(InputError, match=r"unknown model 'SmolLM2-135M'.*serves \['SmolLM2-135M-Instruct'\]"),
    ):
        c.chat_many([(convo(i), 0) for i in range(20)])
    assert openai_server.requests == []  # stopped before the first chat request


def test_the_right_model_name_passes_the_check_once_per_client(openai_server: FakeOpenAI) -> None:
    openai_server.listed = ["teacher", "other"]
    with LLMClient(cfg_for(openai_server.base_url)) as c:
        assert all(r.ok for r in c.chat_many([(convo(i), 0) for i in range(5)]))
        assert c.chat(convo(99)).ok
    assert openai_server.model_lists == 1 and len(openai_server.requests) == 6


def test_a_server_without_a_model_list_still_works(openai_server: FakeOpenAI) -> None:
    openai_server.listed = None  # GET /v1/models: 404
    with LLMClient(cfg_for(openai_server.base_url, model="anything")) as c:
        assert all(r.ok for r in c.chat_many([(convo(i), 0) for i in range(3)]))
    assert openai_server.model_lists == 0 and len(openai_server.requests) == 3


# -- defect 2: FastAPI-style error bodies ------------------------------------------------------
def test_fastapi_error_bodies_give_the_reason_and_the_status_once(
    openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_server.error_style = "fastapi"
    openai_server.always = "401"
    monkeypatch.setenv("CREED_TEST_KEY", "sk-wrong")
    cfg = cfg_for(openai_server.base_url, api_key_env="CREED_TEST_KEY", concurrency=1)
    with LLMClient(cfg) as c, pytest.raises(InputError) as info:
        c.chat(convo(0))
    message = str(info.value)
    assert "HTTP 401 Incorrect API key provided:" in message
    assert "Error code" not in message and message.count("401") == 1

    openai_server.always = "503"
    with LLMClient(cfg_for(openai_server.base_url, max_retries=0), backoff_s=0.001) as c:
        assert c.chat(convo(0)).error == "HTTP 503: The server had an error (gave up after 1 attempts)"


def test_error_message_reads_every_body_shape() -> None:
    class Exc:
        def __init__(self, body: object, message: str = "Error code: 422 - {...}") -> None:
            self.body, self.message = body, message

    assert error_message(Exc({"detail": "Not Found"})) == "Not Found"
    assert error_message(Exc({"message": "bad", "type": "x"})) == "bad"  # the client unwraps "error"
    assert error_message(Exc({"error": "model overloaded"})) == "model overloaded"
    validation = {"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]}
    assert error_message(Exc(validation)) == "field required"
    assert error_message(Exc("Bad Gateway")) == "Bad Gateway"
    assert error_message(Exc(None, "Error code: 500 - weird")) == "weird"


# -- defect 3: a dead teacher ------------------------------------------------------------------
def test_a_closed_port_gives_up_within_seconds_with_a_transient_error() -> None:
    cfg = cfg_for(f"http://127.0.0.1:{closed_port()}/v1", concurrency=4)
    t0 = time.monotonic()
    with LLMClient(cfg) as c, pytest.raises(TransientError, match="cannot connect"):  # default backoff
        c.chat_many([(convo(i), 0) for i in range(40)])
    assert time.monotonic() - t0 < 5.0  # was 43 s: every request spent its 5 retries first


def test_a_server_killed_mid_run_stops_the_client_within_seconds(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--latency", "0.02"],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        killed: list[float] = []

        def on_result(i: int, r: object) -> None:
            if i >= 20 and not killed:
                os.kill(server.pid, signal.SIGKILL)
                killed.append(time.monotonic())

        with LLMClient(cfg_for(base_url, concurrency=4), str(tmp_path / "cache")) as c:
            with pytest.raises(TransientError, match="cannot connect"):
                c.chat_many([(convo(i), 0) for i in range(400)], on_result=on_result)
            assert time.monotonic() - killed[0] < 5.0  # was 79 s
        assert len(ResponseCache(str(tmp_path / "cache")).hashes()) >= 20  # what was answered is kept
    finally:
        server.kill()
        server.wait()


def test_a_server_that_only_fails_trips_on_the_share_of_recent_give_ups(openai_server: FakeOpenAI) -> None:
    openai_server.always = "503"
    cfg = cfg_for(openai_server.base_url, concurrency=2, max_retries=1)
    with (
        LLMClient(cfg, backoff_s=0.001, max_backoff_s=0.01) as c,
        pytest.raises(TransientError, match="32 of the last 32 requests failed after 1 retries each"),
    ):
        c.chat_many([(convo(i), 0) for i in range(1000)])
    assert len(openai_server.requests) <= 2 * (32 + 2)  # not 2 x 1000 (and not 2 x 50 as before)


@pytest.mark.parametrize(
    "failing", [set(range(0, 90, 3)), set(range(20))], ids=["a third, spread", "a block of 20"]
)
def test_requests_that_fail_on_their_own_do_not_trip_the_breaker(
    openai_server: FakeOpenAI, failing: set[int]
) -> None:
    # Some conversations always fail: the step decides (max_failed_fraction), not the breaker.
    openai_server.responder = lambda body: (
        Reply(fault="503") if int(body["messages"][1]["content"].split()[-1]) in failing else None
    )
    with LLMClient(cfg_for(openai_server.base_url, max_retries=1), backoff_s=0.001, max_backoff_s=0.01) as c:
        results = c.chat_many([(convo(i), 0) for i in range(90)])
    assert {i for i, r in enumerate(results) if not r.ok} == failing


# -- defect 4: timeouts against a server that serves one request at a time -----------------------
def test_timed_out_requests_do_not_pile_onto_a_saturated_server(openai_server: FakeOpenAI) -> None:
    # llama.cpp: one request at a time, the rest queue; a request that times out in the queue is
    # still generated. 8 in flight, 0.2 s per answer, 0.5 s timeout: most of the queue times out.
    openai_server.serial = True
    openai_server.latency = 0.2
    cfg = cfg_for(openai_server.base_url, concurrency=8, timeout_s=0.5, max_retries=20)
    with LLMClient(cfg, backoff_s=0.05, max_backoff_s=2.0) as c:
        results = c.chat_many([(convo(i), 0) for i in range(24)])
    assert all(r.ok for r in results)
    generated = sum(1 for _, _, status in openai_server.events if status == 200)
    assert generated <= 1.5 * 24, f"the server generated {generated} answers to deliver 24"


def test_the_model_check_can_be_skipped_for_gateways_that_do_not_list_every_name(
    openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_server.listed = ["gpt-4o"]  # an Azure-style list of base models; the name is a deployment
    monkeypatch.setenv("CREED_NO_MODEL_CHECK", "1")
    with LLMClient(cfg_for(openai_server.base_url, model="my-deployment")) as c:
        assert c.chat(convo(0)).ok
    assert openai_server.model_lists == 0
