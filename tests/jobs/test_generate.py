"""The generate stage: pairing and sharding (pure), then the whole step against the loopback
OpenAI-compatible server: crash safety under SIGKILL, byte-identical reruns from the cache, failure
files and exit codes, token and cost accounting, and agreement with the plan builder."""

# ruff: noqa: F811  (test parameters are named after the imported `openai_server` fixture)
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.common import manifest, store
from jobs.common.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_TRANSIENT, TransientError
from jobs.common.records import Generation, Persona, PromptItem, Usage
from jobs.common.stage import main
from jobs.generate import core
from jobs.generate.config import GenerateConfig
from jobs.generate.run import run
from jobs.llm import ChatResult, LLMConfig, request_hash
from jobs.llm.cache import ResponseCache
from tests.fakes.openai_server import FakeOpenAI, Reply, openai_server  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]

PERSONAS = [Persona(id=f"p{i}", description="", system=f"You are persona {i}.") for i in range(3)]
PROMPTS = [PromptItem(id=f"q{j:02d}", text=f"What about topic {j}?") for j in range(20)]


# ---------------------------------------------------------------------------------------------
# Pure: requests, pairing, shards
# ---------------------------------------------------------------------------------------------
def test_every_persona_answers_every_prompt_by_default() -> None:
    reqs = core.build_requests(PERSONAS, PROMPTS, dataset="d", samples=2)
    assert len(reqs) == 3 * 20 * 2
    assert len({r.id for r in reqs}) == len(reqs)
    assert Counter((r.persona.id, r.prompt.id) for r in reqs) == {
        (p.id, q.id): 2 for p in PERSONAS for q in PROMPTS
    }
    r = reqs[0]
    assert r.messages() == [
        {"role": "system", "content": "You are persona 0."},
        {"role": "user", "content": "What about topic 0?"},
    ]


def test_capped_pairing_is_seeded_balanced_and_reproducible() -> None:
    def build(seed: int) -> list[core.Request]:
        return core.build_requests(PERSONAS, PROMPTS, dataset="d", samples=1, seed=seed, max_prompt_uses=1)

    reqs = build(0)
    assert [r.prompt.id for r in reqs] == [q.id for q in PROMPTS]  # each prompt once, in file order
    uses = Counter(r.persona.id for r in reqs)
    assert set(uses) == {"p0", "p1", "p2"} and max(uses.values()) - min(uses.values()) <= 1
    assert [r.id for r in build(0)] == [r.id for r in reqs]
    assert [r.id for r in build(1)] != [r.id for r in reqs]
    two = core.build_requests(PERSONAS, PROMPTS, dataset="d", samples=1, max_prompt_uses=2)
    assert Counter(r.prompt.id for r in two) == {q.id: 2 for q in PROMPTS}
    assert len({(r.persona.id, r.prompt.id) for r in two}) == 40  # two distinct personas per prompt
    assert sorted(Counter(r.persona.id for r in two).values()) in ([13, 13, 14], [13, 14, 13])


def test_shards_partition_the_requests() -> None:
    reqs = core.build_requests(PERSONAS, PROMPTS, dataset="d", samples=1)
    shards = [core.shard_requests(reqs, i, 7) for i in range(7)]
    ids = [r.id for s in shards for r in s]
    assert sorted(ids) == sorted(r.id for r in reqs) and len(set(ids)) == len(ids)
    assert {len(s) for s in shards} == {8, 9}


def test_failed_fraction_above_threshold_is_transient() -> None:
    req = core.build_requests(PERSONAS[:1], PROMPTS[:4], dataset="d", samples=1)
    teacher = LLMConfig(provider="mock", prices={"input": 2.0, "output": 10.0})
    ok = ChatResult(
        text="hi",
        finish_reason="stop",
        usage=Usage(prompt_tokens=100, completion_tokens=10),
        request_hash="a",
    )
    bad = ChatResult(text="", finish_reason="error", usage=Usage(), error="HTTP 500", request_hash="b")
    out = core.collect(req, [ok, bad, ok, ok.model_copy(update={"cached": True})], teacher)
    assert out.counts == {
        "requests": 4,
        "generated": 3,
        "failed": 1,
        "cached": 1,
        "truncated": 0,
        "prompt_tokens": 300,
        "completion_tokens": 30,
    }
    assert out.cost_usd == pytest.approx((300 * 2 + 30 * 10) / 1e6)
    assert out.spent_usd == pytest.approx((200 * 2 + 20 * 10) / 1e6)
    assert out.failures == [
        {
            "id": "d:p0:q01:0",
            "persona_id": "p0",
            "prompt_id": "q01",
            "sample": 0,
            "request_hash": "b",
            "error": "HTTP 500",
            "attempts": 1,
        }
    ]
    core.check_failures(out, 0.25)
    with pytest.raises(TransientError, match="1 of 4 requests failed"):
        core.check_failures(out, 0.2)


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------
def write_inputs(tmp: Path, n_prompts: int = 20) -> tuple[str, str]:
    personas = tmp / "personas.yaml"
    personas.write_text(yaml.safe_dump([p.model_dump() for p in PERSONAS]))
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(q.model_dump()) + "\n" for q in PROMPTS[:n_prompts]))
    return str(personas), str(prompts)


def step_config(tmp: Path, server: FakeOpenAI | None, name: str = "run", **over: Any) -> dict[str, Any]:
    personas, prompts = write_inputs(tmp, over.pop("n_prompts", 20))
    teacher = {"provider": "mock"}
    if server is not None:
        teacher = {"provider": "openai", "model": "teacher", "base_url": server.base_url, "concurrency": 4}
    teacher |= over.pop("teacher", {})
    cfg = {
        "experiment": "exp",
        "step": f"generate-d-{name}",
        "manifest": str(tmp / name / "_manifest.json"),
        "dataset": "d",
        "personas": personas,
        "prompts": prompts,
        "samples": 1,
        "teacher": teacher,
        "cache": str(tmp / "cache"),
        "output": str(tmp / name / "shard-00000.jsonl"),
        "errors": str(tmp / name / "errors-shard-00000.jsonl"),
        "progress": False,
    }
    return cfg | over


def run_step(tmp: Path, cfg: dict[str, Any]) -> int:
    path = tmp / f"{cfg['step']}.json"
    path.write_text(json.dumps(cfg))
    return main(GenerateConfig, run, ["--config", str(path)])


def read_records(uri: str) -> list[Generation]:
    return [Generation.model_validate_json(line) for line in Path(uri).read_text().splitlines()]


def hashes_of(cfg: dict[str, Any]) -> dict[str, str]:
    """request id -> request hash, for every request of the step's dataset."""
    teacher = LLMConfig.model_validate(cfg["teacher"])
    reqs = core.build_requests(PERSONAS, PROMPTS, dataset="d", samples=cfg["samples"])
    return {r.id: request_hash(teacher, r.messages(), r.sample) for r in reqs}


def cached_hashes(cache: Path) -> set[str]:
    return ResponseCache(str(cache)).hashes()


def test_sigkill_mid_shard_then_rerun_completes_without_duplicates_or_repaid_requests(
    openai_server: FakeOpenAI, tmp_path: Path
) -> None:
    openai_server.latency = 0.15
    cfg = step_config(tmp_path, openai_server)  # 60 requests, 4 at a time: ~2.3 s of answering
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    env = os.environ | {"CREED_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.generate", "--config", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    cache = tmp_path / "cache"
    deadline = time.monotonic() + 30
    while len(cached_hashes(cache)) < 12:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the stage answered nothing in 30 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    answered_before_kill = cached_hashes(cache)
    assert 12 <= len(answered_before_kill) < 60
    assert not Path(cfg["output"]).exists() and not Path(cfg["manifest"]).exists()
    sent_before = len(openai_server.requests)

    openai_server.latency = 0.0
    assert run_step(tmp_path, cfg) == EXIT_OK
    records = read_records(cfg["output"])
    hashes = hashes_of(cfg)
    teacher = LLMConfig.model_validate(cfg["teacher"])
    assert sorted(r.id for r in records) == sorted(hashes)  # complete, no duplicate
    assert all(r.request_hash == hashes[r.id] and r.response for r in records)
    asked = {  # request hash -> requests the server received for it, over both runs
        request_hash(teacher, r.messages(), r.sample): openai_server.count(r.messages())
        for r in core.build_requests(PERSONAS, PROMPTS, dataset="d", samples=1)
    }
    assert all(asked[h] == 1 for h in answered_before_kill)  # persisted before the kill: never re-asked
    asked_twice = [h for h, n in asked.items() if n == 2]
    assert len(asked_twice) <= 4  # only what was in flight at the kill (concurrency 4)
    assert set(asked.values()) <= {1, 2}
    assert len(openai_server.requests) - sent_before == 60 - len(answered_before_kill)
    m = manifest.read(cfg["manifest"])
    assert m is not None and m.counts["cached"] == len(answered_before_kill)
    assert m.counts["generated"] == 60 and m.counts["failed"] == 0


def test_same_spec_same_requests_and_byte_identical_output_from_the_cache(
    openai_server: FakeOpenAI, tmp_path: Path
) -> None:
    first = step_config(tmp_path, openai_server, "first", teacher={"seed": 3})
    second = step_config(tmp_path, openai_server, "second", teacher={"seed": 3})
    assert run_step(tmp_path, first) == EXIT_OK
    sent = len(openai_server.requests)
    assert sent == 60
    assert run_step(tmp_path, second) == EXIT_OK
    assert len(openai_server.requests) == sent  # all answers from the cache: nothing paid twice
    assert Path(first["output"]).read_bytes() == Path(second["output"]).read_bytes()
    recs = read_records(first["output"])
    r = recs[0]
    assert (r.id, r.dataset, r.persona_id, r.prompt_id, r.prompt) == (
        "d:p0:q00:0",
        "d",
        "p0",
        "q00",
        "What about topic 0?",
    )
    assert r.response == "Answer to: What about topic 0?" and r.teacher == "teacher"
    assert r.params == {
        "provider": "openai",
        "revision": None,
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 512,
        "seed": 3,
    }
    assert r.attempts == 1 and r.created_at is not None and r.latency_s is not None
    m2 = manifest.read(second["manifest"])
    assert m2 is not None and m2.counts["cached"] == 60 and m2.counts["sent"] == 0


def test_failures_are_written_with_reasons_and_exit_75_above_the_threshold(
    openai_server: FakeOpenAI, tmp_path: Path
) -> None:
    # Prompts 0-4 always fail (15 of 60 requests, 25%).
    openai_server.responder = lambda body: (
        Reply(fault="503")
        if body["messages"][1]["content"].split()[-1].rstrip("?") in {"0", "1", "2", "3", "4"}
        else None
    )
    cfg = step_config(tmp_path, openai_server, "strict", teacher={"max_retries": 1}, max_failed_fraction=0.2)
    assert run_step(tmp_path, cfg) == EXIT_TRANSIENT
    assert not Path(cfg["manifest"]).exists()  # the step is not complete: Argo retries it
    errors = [json.loads(line) for line in Path(cfg["errors"]).read_text().splitlines()]
    assert len(errors) == 15
    assert {e["prompt_id"] for e in errors} == {"q00", "q01", "q02", "q03", "q04"}
    assert all(e["error"] == "HTTP 503: The server had an error (gave up after 2 attempts)" for e in errors)
    assert all(e["attempts"] == 2 for e in errors)

    lenient = step_config(
        tmp_path, openai_server, "lenient", teacher={"max_retries": 1}, max_failed_fraction=0.3
    )
    before = len(openai_server.requests)
    assert run_step(tmp_path, lenient) == EXIT_OK
    assert len(openai_server.requests) - before == 30  # the 45 answers come from the cache
    m = manifest.read(lenient["manifest"])
    assert m is not None and (m.counts["failed"], m.counts["generated"], m.counts["cached"]) == (15, 45, 45)
    assert len(read_records(lenient["output"])) == 45


def test_bad_key_stops_the_step_with_exit_2(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    openai_server.always = "401"
    cfg = step_config(tmp_path, openai_server)
    assert run_step(tmp_path, cfg) == EXIT_BAD_INPUT
    assert len(openai_server.requests) <= 4
    assert not Path(cfg["output"]).exists() and not Path(cfg["manifest"]).exists()


def test_tokens_and_cost_are_accounted_in_the_manifest(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    cfg = step_config(
        tmp_path,
        openai_server,
        teacher={"prices": {"input": 3.0, "output": 15.0}, "max_tokens": 4},
        n_prompts=5,
    )
    assert run_step(tmp_path, cfg) == EXIT_OK
    recs = read_records(cfg["output"])
    pt = sum(r.usage.prompt_tokens for r in recs)
    ct = sum(r.usage.completion_tokens for r in recs)
    m = manifest.read(cfg["manifest"])
    assert m is not None
    assert (m.counts["prompt_tokens"], m.counts["completion_tokens"]) == (pt, ct) == (15 * 8, 15 * 4)
    assert m.counts["truncated"] == 15  # max_tokens 4 cuts every answer
    assert m.extra["cost_usd"] == pytest.approx((pt * 3 + ct * 15) / 1e6)
    assert m.extra["spent_usd"] == m.extra["cost_usd"]
    assert m.extra["persona_uses"] == {"p0": 5, "p1": 5, "p2": 5}
    assert m.outputs == [cfg["output"], cfg["errors"]]


def test_mock_teacher_and_shards_from_the_plan(tmp_path: Path) -> None:
    from workflows.plan import build_plan
    from workflows.spec import from_dict

    personas, prompts = write_inputs(tmp_path)
    spec = from_dict(
        {
            "name": "exp",
            "store": str(tmp_path / "store"),
            "teacher": {"provider": "mock", "max_tokens": 64},
            "datasets": {
                "d": {"personas": personas, "prompts": prompts, "shards": 3, "max_prompt_uses": 2, "seed": 5}
            },
        }
    )
    plan = build_plan(spec)
    for f in plan.inputs:  # what the backends do before the first step
        store.write_bytes(f.uri, Path(f.source).read_bytes())
    steps = [s for s in plan.steps if s.stage == "generate"]
    assert len(steps) == 3
    ids: list[str] = []
    for s in steps:
        cfg = s.config.model_dump(mode="json") | {"progress": False}
        GenerateConfig.model_validate(cfg)  # the plan writes exactly the keys the stage accepts
        assert run_step(tmp_path, cfg) == EXIT_OK
        ids += [r.id for r in read_records(cfg["output"])]
        assert Path(cfg["errors"]).read_text() == ""
    assert len(ids) == len(set(ids)) == 40  # 20 prompts x 2 personas, split over 3 shards


def test_resharding_reuses_every_cached_answer(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    whole = step_config(tmp_path, openai_server, "whole")
    assert run_step(tmp_path, whole) == EXIT_OK
    assert len(openai_server.requests) == 60
    ids: list[str] = []
    for i in range(3):
        part = step_config(tmp_path, openai_server, f"part{i}", shard=i, num_shards=3)
        assert run_step(tmp_path, part) == EXIT_OK
        ids += [r.id for r in read_records(part["output"])]
    assert len(openai_server.requests) == 60  # the cache is keyed by request, not by shard
    assert sorted(ids) == sorted(r.id for r in read_records(whole["output"]))


def test_max_prompts_answers_a_seeded_subset(tmp_path: Path) -> None:
    cfg = step_config(tmp_path, None, max_prompts=5)
    assert run_step(tmp_path, cfg) == 0
    rows = read_records(cfg["output"])
    prompts = {r.prompt_id for r in rows}
    assert len(prompts) == 5 and len(rows) == 5 * len(PERSONAS)
    again = step_config(tmp_path, None, name="again", max_prompts=5)
    assert run_step(tmp_path, again) == 0
    assert {r.prompt_id for r in read_records(again["output"])} == prompts


def test_sigterm_mid_shard_exits_75_and_keeps_every_answer_received(
    openai_server: FakeOpenAI, tmp_path: Path
) -> None:
    """A pod being deleted or its node shutting down: the step stops cleanly with exit 75 (Argo
    retries it), every answer received so far is in the cache, and the retry pays only for the rest."""
    openai_server.latency = 0.15
    cfg = step_config(tmp_path, openai_server)  # 60 requests, 4 at a time
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    env = os.environ | {"CREED_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.generate", "--config", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    cache = tmp_path / "cache"
    deadline = time.monotonic() + 30
    while len(cached_hashes(cache)) < 12:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the stage answered nothing in 30 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 75, err.decode()[-2000:]
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(e["event"] == "generate.terminated" for e in events)
    answered = cached_hashes(cache)
    sent = len(openai_server.requests)
    assert 12 <= len(answered) < 60 and sent - len(answered) <= 4  # at most the requests in flight
    assert not Path(cfg["output"]).exists() and not Path(cfg["manifest"]).exists()

    openai_server.latency = 0.0
    assert run_step(tmp_path, cfg) == EXIT_OK
    assert len(read_records(cfg["output"])) == 60
    assert len(openai_server.requests) - sent == 60 - len(answered)  # nothing received is paid twice


def _tag_prompts(tmp: Path, tags: dict[str, list[str]]) -> None:
    """Rewrite the prompt file with tags on some prompts (prompt id -> tags)."""
    prompts = tmp / "prompts.jsonl"
    rows = [q.model_copy(update={"tags": tags.get(q.id, [])}) for q in PROMPTS]
    prompts.write_text("".join(json.dumps(q.model_dump()) + "\n" for q in rows))


def test_complicity_prompts_are_excluded_by_default_before_subsetting_and_counted(tmp_path: Path) -> None:
    tagged = {"q00": ["complicity"], "q03": ["complicity", "identity"], "q07": ["identity"]}
    cfg = step_config(tmp_path, None)
    _tag_prompts(tmp_path, tagged)
    assert GenerateConfig.model_validate(cfg).exclude_tags == ["complicity"]
    assert run_step(tmp_path, cfg) == EXIT_OK
    asked = {r.prompt_id for r in read_records(cfg["output"])}
    assert asked == {q.id for q in PROMPTS} - {"q00", "q03"}  # identity alone is kept
    m = manifest.read(cfg["manifest"])
    assert m is not None
    assert m.counts["prompts_in_file"] == 20 and m.counts["prompts_excluded"] == 2
    assert m.extra["excluded_by_tag"] == {"complicity": 2}

    # max_prompts counts prompts that can be asked: 18 of them, so 18 is every one of them
    sub = step_config(tmp_path, None, name="sub", max_prompts=18)
    _tag_prompts(tmp_path, tagged)
    assert run_step(tmp_path, sub) == EXIT_OK
    assert {r.prompt_id for r in read_records(sub["output"])} == asked

    # the ablation: exclude_tags: [] asks the complicity prompts too
    every = step_config(tmp_path, None, name="every", exclude_tags=[])
    _tag_prompts(tmp_path, tagged)
    assert run_step(tmp_path, every) == EXIT_OK
    assert {r.prompt_id for r in read_records(every["output"])} == {q.id for q in PROMPTS}
    m = manifest.read(every["manifest"])
    assert m is not None and m.counts["prompts_excluded"] == 0


def test_excluding_every_prompt_is_a_bad_input(tmp_path: Path) -> None:
    cfg = step_config(tmp_path, None, exclude_tags=["identity"])
    _tag_prompts(tmp_path, {q.id: ["identity"] for q in PROMPTS})
    assert run_step(tmp_path, cfg) == EXIT_BAD_INPUT
    assert not Path(cfg["output"]).exists()


def test_a_dataset_may_have_its_own_teacher() -> None:
    from workflows.plan import build_plan
    from workflows.spec import from_dict

    spec = from_dict(
        {
            "name": "exp",
            "teacher": {"provider": "mock", "model": "main"},
            "datasets": {
                "a": {"personas": "p.yaml", "prompts": "a.jsonl"},
                "b": {
                    "personas": "p.yaml",
                    "prompts": "b.jsonl",
                    "shards": 2,
                    "teacher": {"provider": "openai", "model": "other", "base_url": "http://x/v1"},
                },
            },
        }
    )
    plan = build_plan(spec)
    assert plan.step("generate-a-0").config.teacher.model == "main"  # type: ignore[attr-defined]
    for i in range(2):
        t = plan.step(f"generate-b-{i}").config.teacher  # type: ignore[attr-defined]
        assert (t.provider, t.model, t.base_url) == ("openai", "other", "http://x/v1")
