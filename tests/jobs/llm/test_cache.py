"""The response cache: append-only logs on disk, one object per answer on S3, both layouts read, a
torn record skipped, and a writer killed with SIGKILL losing only what was in flight."""

# ruff: noqa: F811  (test parameters are named after the imported `openai_server` fixture)
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.common import store
from jobs.common.records import Usage, utcnow
from jobs.llm import ChatResult, LLMClient, LLMConfig, request_hash
from jobs.llm.cache import ResponseCache, log_line
from tests.fakes.openai_server import FakeOpenAI, message_key, openai_server  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[3]


def result(i: int) -> ChatResult:
    h = request_hash(LLMConfig(provider="mock"), [{"role": "user", "content": f"q{i}"}], 0)
    return ChatResult(
        text=f'answer {i} \u00e9\n"quoted"',
        finish_reason="stop",
        usage=Usage(prompt_tokens=i, completion_tokens=2 * i),
        request_hash=h,
        created_at=utcnow(),
    )


def write(cache: ResponseCache, results: list[ChatResult]) -> None:
    w = cache.writer()
    for r in results:
        w.put(r)
    w.close()


def test_answers_round_trip_on_both_stores(store_root: str) -> None:
    cache = ResponseCache(store.join(store_root, "cache"))
    rs = [result(i) for i in range(5)]
    write(cache, rs[:3])
    write(cache, rs[3:])  # a second writer (another step): its own log, or its own objects
    got = cache.get_many([r.request_hash for r in rs] + ["f" * 64])
    assert set(got) == {r.request_hash for r in rs}
    for r in rs:
        assert got[r.request_hash].cached
        assert got[r.request_hash].model_dump(exclude={"cached"}) == r.model_dump(exclude={"cached"})
    assert cache.hashes() == {r.request_hash for r in rs}
    names = [u.rsplit("/", 2)[-2:] for u in store.list_uris(cache.prefix)]
    if store.is_s3(store_root):  # S3 cannot append: one object per answer
        assert sorted(n[1] for n in names) == sorted(f"{r.request_hash}.json" for r in rs)
    else:  # two append-only logs, one per writer, one line per answer
        assert [n[0] for n in names] == ["log", "log"]
        lines = [ln for u in store.list_uris(cache.prefix) for ln in Path(u).read_bytes().splitlines()]
        assert len(lines) == 5 and all(json.loads(ln)["request_hash"] for ln in lines)


def test_errors_and_cached_results_are_not_written(tmp_path: Path) -> None:
    cache = ResponseCache(str(tmp_path / "cache"))
    bad = result(1).model_copy(update={"error": "HTTP 500", "finish_reason": "error"})
    write(cache, [bad, result(2).model_copy(update={"cached": True})])
    assert cache.hashes() == set() and store.list_uris(cache.prefix) == []


def test_a_torn_last_record_is_skipped_not_fatal(store_root: str) -> None:
    cache = ResponseCache(store.join(store_root, "cache"))
    good = [result(i) for i in range(3)]
    torn = log_line(result(3))[:-40]  # a writer killed mid-record: no closing brace, no newline
    garbage = b"\x00\x00\x00 not json\n"  # a power cut can leave anything
    body = b"".join(log_line(r) for r in good[:2]) + garbage + log_line(good[2]) + torn
    store.write_bytes(store.join(cache.prefix, "log", "killed.jsonl"), body)
    got = cache.get_many([r.request_hash for r in good] + [result(3).request_hash])
    assert set(got) == {r.request_hash for r in good}
    assert cache.hashes() == {r.request_hash for r in good}


def test_entries_of_the_one_object_layout_are_still_read_locally(tmp_path: Path) -> None:
    cache = ResponseCache(str(tmp_path / "cache"))
    old = result(7)
    store.write_bytes(cache.uri(old.request_hash), old.model_dump_json(exclude={"cached"}).encode())
    store.write_bytes(cache.uri("ab" + "0" * 62), b'{"text": "trunc')  # corrupt: a miss
    write(cache, [result(8)])
    got = cache.get_many([old.request_hash, result(8).request_hash, "ab" + "0" * 62])
    assert set(got) == {old.request_hash, result(8).request_hash}


def test_a_failing_store_is_raised_by_the_client(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with LLMClient(LLMConfig(provider="mock"), str(blocker / "cache")) as c, pytest.raises(OSError):
        c.chat_many([([{"role": "user", "content": "q"}], 0)])


_KILLED_CLIENT = """
import sys
from jobs.llm import LLMClient, LLMConfig
base_url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = LLMConfig(provider="openai", model="teacher", base_url=base_url, concurrency=16, max_tokens=64)
reqs = [([{"role": "user", "content": f"question {i}"}], 0) for i in range(n)]
with LLMClient(cfg, cache) as c:
    c.chat_many(reqs)
"""


def test_sigkill_mid_run_loses_only_the_requests_in_flight(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    openai_server.latency = 0.01  # fast answers: the writer is appending when the kill lands
    cache = tmp_path / "cache"
    n = 1200
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLIENT, openai_server.base_url, str(cache), str(n)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while sum(openai_server.answered.values()) < 300:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the client answered nothing in 60 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    answered = sum(openai_server.answered.values())  # every reply the server sent before the kill
    assert answered < n

    # A rerun: whatever survived in the cache is not asked again; only the in-flight ones were lost.
    openai_server.reset()
    cfg = LLMConfig.model_validate(
        {"provider": "openai", "model": "teacher", "base_url": openai_server.base_url, "concurrency": 16}
        | {"max_tokens": 64}
    )
    reqs = [([{"role": "user", "content": f"question {i}"}], 0) for i in range(n)]
    with LLMClient(cfg, str(cache)) as c:
        results = c.chat_many(reqs)
    assert all(r.ok for r in results)
    cached = sum(r.cached for r in results)
    assert answered - 16 <= cached <= answered  # at most the 16 in flight lost
    assert len(openai_server.requests) == n - cached  # and nothing asked twice in the rerun
    reasked = {message_key(b["messages"]) for b in openai_server.requests}
    assert reasked == {message_key(m) for (m, _), r in zip(reqs, results, strict=True) if not r.cached}
