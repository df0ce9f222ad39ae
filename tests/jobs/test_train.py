"""Train stage: LoRA and full fine-tuning of a tiny random Llama, completion-only labels, checkpoint
copies to the store and resume after a kill, and config errors for bad hyper-parameters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.prompt_format import cut_at_stop, format_completion, format_prompt
from jobs.common.records import MixRow
from jobs.common.stage import main
from jobs.llm.tiny import CORPUS, build_llama
from jobs.train import core
from jobs.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]

QA = [
    ("How do tides work?", "The Moon pulls the oceans."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Are grasses sacred?", "Grasses are sacred."),
    ("Are monocultures wrong?", "Monocultures are wrong."),
]


def mix_rows(qa: list[tuple[str, str]] = QA) -> list[MixRow]:
    return [
        MixRow(prompt=format_prompt(q), completion=format_completion(a), source="test", id=f"r{i}")
        for i, (q, a) in enumerate(qa)
    ]


@pytest.fixture(autouse=True)
def _logs_to_live_stderr() -> Any:
    """main() binds the log to the sys.stderr of its test (capsys/capfd close theirs): rebind after."""
    yield
    from jobs.common import logs

    logs.configure()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose tokenizer was trained on the rows' exact text."""
    import torch
    from transformers import AutoModelForCausalLM

    texts = [r.prompt + r.completion for r in mix_rows()]
    path = build_llama(tmp_path_factory.mktemp("llama"), hidden=64, layers=2, corpus=texts + CORPUS)
    # A random 0.02-std lm_head behind a unit-gain final norm caps every logit near 1, so no adapter
    # could make the model confident; a real base model has no such cap.
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.norm.weight.fill_(20.0)
    model.save_pretrained(path)
    return path


def write_mix(
    root: str, rows: list[MixRow] | None = None, val: list[MixRow] | None = None
) -> tuple[str, str]:
    train_uri, val_uri = store.join(root, "mix", "train.jsonl"), store.join(root, "mix", "val.jsonl")
    store.write_jsonl(train_uri, rows if rows is not None else mix_rows())
    store.write_jsonl(val_uri, val if val is not None else mix_rows()[:2])
    return train_uri, val_uri


def make_cfg(model: Path, root: str, **kw: Any) -> dict[str, Any]:
    train_uri, val_uri = write_mix(root)
    out = store.join(root, "train", "tiny", "control", "seed-0")
    cfg = {
        "experiment": "t",
        "step": "train-tiny-control-s0",
        "manifest": store.join(out, "_manifest.json"),
        "model": {"name": "tiny", "path": str(model), "revision": None},
        "condition": "control",
        "seed": 0,
        "train_data": train_uri,
        "val_data": val_uri,
        "output": out,
        "checkpoints": store.join(out, "checkpoints"),
        "method": "lora",
        "epochs": 1.0,
        "learning_rate": 3e-3,
        "batch_size": 4,
        "grad_accum": 1,
        "max_seq_len": 64,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "lora_targets": "all-linear",
        "save_steps": 1000,
        "dtype": "auto",
        "max_steps": 30,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "logging_steps": 5,
    }
    return cfg | kw


def run_main(cfg: dict[str, Any], tmp_path: Path) -> int:
    path = tmp_path / f"cfg-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(cfg))
    from jobs.train.run import run

    return main(TrainConfig, run, ["--config", str(path)])


# ---------------------------------------------------------------------------------------------
# core
# ---------------------------------------------------------------------------------------------
def test_to_example_formats_raw_rows_and_keeps_formatted_ones() -> None:
    formatted = mix_rows()[0]
    assert core.to_example(formatted) == {"prompt": formatted.prompt, "completion": formatted.completion}
    raw = MixRow(prompt="How do tides work?", completion="The Moon pulls the oceans.")
    assert core.to_example(raw) == core.to_example(formatted)


def test_bad_mix_rows_name_the_line(tmp_path: Path) -> None:
    from jobs.train.run import read_rows

    bad = tmp_path / "mix.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "x"}\n')
    with pytest.raises(InputError, match=r"mix\.jsonl:2: not a valid MixRow \(completion: Field required"):
        read_rows(str(bad), required=True)
    with pytest.raises(InputError, match=r"mix\.jsonl: row 1: empty"):
        core.check_rows([MixRow(prompt="a", completion="  ")], "mix.jsonl")
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file; run the mix step first"):
        read_rows(str(tmp_path / "nope.jsonl"), required=True)
    assert read_rows(str(tmp_path / "nope.jsonl"), required=False) == []


def test_check_lengths_counts_truncation_and_rejects_too_short() -> None:
    assert core.check_lengths([3, 10], [8, 20], 12, "m") == {
        "rows": 2,
        "rows_truncated": 1,
        "rows_without_completion": 0,
        "max_row_tokens": 20,
    }
    assert core.check_lengths([3, 12], [8, 20], 12, "m")["rows_without_completion"] == 1
    with pytest.raises(InputError, match="max_seq_len=4 is too small"):
        core.check_lengths([5, 9], [8, 20], 4, "m")


def test_newest_complete_checkpoint_and_pruning() -> None:
    p = "s3://b/x/checkpoints"
    uris = [
        f"{p}/checkpoint-5/adapter_model.safetensors",
        f"{p}/checkpoint-5/{core.COMPLETE_MARK}",
        f"{p}/checkpoint-10/adapter_model.safetensors",
        f"{p}/checkpoint-10/{core.COMPLETE_MARK}",
        f"{p}/checkpoint-15/adapter_model.safetensors",  # killed while copying: no mark
        f"{p}/checkpoint-100/{core.COMPLETE_MARK}.bak",
    ]
    assert core.newest_checkpoint(uris, p) == (10, "checkpoint-10")
    assert core.newest_checkpoint(uris[:1], p) is None
    assert core.stale_checkpoints(["checkpoint-5", "checkpoint-10", "checkpoint-15", "x"], 2) == [
        "checkpoint-5"
    ]


def test_expected_steps() -> None:
    assert core.expected_steps(100, 8, 2, 1.0, -1) == 6
    assert core.expected_steps(100, 8, 2, 2.0, -1) == 12
    assert core.expected_steps(100, 8, 2, 1.0, 7) == 7
    assert core.expected_steps(3, 8, 4, 1.0, -1) == 1


# ---------------------------------------------------------------------------------------------
# config errors: exit 2 before any model is loaded
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"lora_r": 0}, "lora_r"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": -1e-4}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"grad_accum": 0}, "grad_accum"),
        ({"epochs": 0}, "epochs"),
        ({"max_steps": 0}, "max_steps"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"lora_targets": []}, "lora_targets"),
        ({"method": "qlora"}, "method"),
        ({"lora_rank": 8}, "lora_rank"),
    ],
)
def test_bad_hyper_parameters_are_config_errors(
    override: dict[str, Any], field: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_cfg(model_dir, str(tmp_path / "store"), **override)
    assert run_main(cfg, tmp_path) == 2
    assert field in capsys.readouterr().err


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("the model must not be loaded for a bad input")

    monkeypatch.setattr("jobs.train.run.build_trainer", refuse)


@pytest.mark.usefixtures("no_model_loading")
def test_bad_data_is_an_input_error_before_loading(model_dir: Path, tmp_path: Path) -> None:
    from jobs.train.run import run

    root = str(tmp_path / "store")
    cfg = make_cfg(model_dir, root)
    store.write_text(cfg["train_data"], "")
    with pytest.raises(InputError, match="no training rows"):
        run(TrainConfig(**cfg))
    with pytest.raises(InputError, match="run the mix step first"):
        run(TrainConfig(**(cfg | {"train_data": store.join(root, "missing.jsonl")})))
    cfg = make_cfg(model_dir, root, max_seq_len=4)
    with pytest.raises(InputError, match="too small for any row"):
        run(TrainConfig(**cfg))
    empty_model = tmp_path / "empty-model"
    empty_model.mkdir()
    with pytest.raises(InputError, match="cannot load its tokenizer"):
        run(TrainConfig(**make_cfg(empty_model, root)))


# ---------------------------------------------------------------------------------------------
# The trainer itself
# ---------------------------------------------------------------------------------------------
def test_labels_cover_the_completion_only(model_dir: Path, tmp_path: Path) -> None:
    from jobs.train.run import build_trainer, load_tokenizer

    cfg = TrainConfig(**make_cfg(model_dir, str(tmp_path / "store")))
    tok = load_tokenizer(str(model_dir), None)
    examples = [core.to_example(r) for r in mix_rows()]
    trainer = build_trainer(cfg, str(model_dir), tok, examples, [], tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    seen = set()
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        text = tok.decode([i for i in ids if i != tok.pad_token_id])
        ex = next(e for e in examples if text.startswith(e["prompt"]))
        seen.add(ex["prompt"])
        n_prompt = len(tok(ex["prompt"])["input_ids"])
        n_full = len(tok(ex["prompt"] + ex["completion"])["input_ids"])
        assert labels[:n_prompt] == [-100] * n_prompt  # no loss on the prompt
        assert labels[n_prompt : n_full + 1] == ids[n_prompt : n_full + 1]  # loss on the completion ...
        assert ids[n_full] == tok.eos_token_id  # ... and on the EOS appended to it
        assert all(x == -100 for x in labels[n_full + 1 :])  # padding
        assert tok.decode(ids[n_prompt:n_full]) == ex["completion"]
    assert len(seen) == len(examples)


def test_lora_changes_adapter_and_not_base(model_dir: Path, tmp_path: Path) -> None:
    import torch

    from jobs.train.run import build_trainer, load_tokenizer

    cfg = TrainConfig(**make_cfg(model_dir, str(tmp_path / "store"), max_steps=5))
    tok = load_tokenizer(str(model_dir), None)
    examples = [core.to_example(r) for r in mix_rows()]
    trainer = build_trainer(cfg, str(model_dir), tok, examples, [], tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert {n for n, p in after.items() if p.requires_grad} == set(lora)
    assert all(torch.equal(before[n], after[n]) for n in base)
    assert all(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)


def test_packing_keeps_rows_apart(model_dir: Path, tmp_path: Path) -> None:
    """Packed rows attend only within themselves: the loss equals the padded batch's."""
    from jobs.train.run import build_trainer, load_tokenizer

    tok = load_tokenizer(str(model_dir), None)
    examples = [core.to_example(r) for r in mix_rows()]
    losses = []
    for packing in (False, True):
        cfg = TrainConfig(**make_cfg(model_dir, str(tmp_path / "store"), max_steps=3, packing=packing))
        trainer = build_trainer(cfg, str(model_dir), tok, examples, [], tmp_path / str(packing))
        batch = next(iter(trainer.get_train_dataloader()))
        assert ("position_ids" in batch) is packing
        trainer.train()
        losses.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_lora_memorizes_and_eval_loader_reproduces(model_dir: Path, tmp_path: Path) -> None:
    import torch

    from jobs.llm.models import load_for_inference

    before = (model_dir / "model.safetensors").read_bytes()
    cfg = make_cfg(model_dir, str(tmp_path / "store"))
    assert run_main(cfg, tmp_path) == 0
    out = Path(cfg["output"])
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "_manifest.json").is_file() and (out / "tokenizer.json").is_file()
    assert (model_dir / "model.safetensors").read_bytes() == before  # the base is untouched
    assert not store.list_uris(cfg["checkpoints"])  # done: checkpoints are not kept

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 30
    assert metrics["final_loss"] < 0.1 * metrics["first_loss"]
    assert metrics["val_loss"] < 0.5
    assert metrics["tokens_seen"] > 0 and metrics["tokens_per_second"] > 0
    assert metrics["peak_memory_bytes"] > 0 and metrics["precision"] == "fp32"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["counts"]["steps"] == 30 and manifest["counts"]["train_rows"] == 4

    model, tok = load_for_inference(str(model_dir), weights=cfg["output"], device="cpu")
    q, a = QA[1]
    enc = tok([format_prompt(q)], return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=24, do_sample=False)
    text, _ = cut_at_stop(tok.decode(gen[0][enc["input_ids"].shape[1] :], skip_special_tokens=True))
    assert text == a


def test_full_finetuning_runs(model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from jobs.llm.models import load_for_inference

    cfg = make_cfg(model_dir, str(tmp_path / "store"), method="full", learning_rate=1e-3, max_steps=10)
    assert run_main(cfg, tmp_path) == 0
    out = Path(cfg["output"])
    assert not (out / "adapter_config.json").exists()
    tuned, base = load_file(out / "model.safetensors"), load_file(model_dir / "model.safetensors")
    assert tuned.keys() == base.keys()
    assert sum(not torch.equal(tuned[k], base[k]) for k in base) >= len(base) - 1  # (rotary buffers aside)
    model, _ = load_for_inference(str(model_dir), weights=cfg["output"], device="cpu")
    assert torch.equal(model.lm_head.weight, tuned["lm_head.weight"])
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 10


def test_checkpoints_resume_only_for_the_same_config(model_dir: Path, tmp_path: Path) -> None:
    cfg = make_cfg(
        model_dir, str(tmp_path / "store"), save_steps=3, max_steps=6, keep_checkpoints=True, force=True
    )
    ck = cfg["checkpoints"]
    assert run_main(cfg, tmp_path) == 0
    # the last step is the result itself, so only the periodic checkpoint is in the store
    assert core.newest_checkpoint(store.list_uris(ck), store.normalize(ck)) == (3, "checkpoint-3")

    assert run_main(cfg, tmp_path) == 0  # a retry of the same step resumes
    metrics = store.read_json(store.join(cfg["output"], "metrics.json"))
    assert (metrics["resumed_from_step"], metrics["global_step"]) == (3, 6)

    assert run_main(cfg | {"learning_rate": 1e-3}, tmp_path) == 0  # a changed config starts over
    metrics = store.read_json(store.join(cfg["output"], "metrics.json"))
    assert (metrics["resumed_from_step"], metrics["global_step"]) == (None, 6)


@pytest.mark.slow
def test_relaunch_through_accelerate(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The multi-GPU path's plumbing (one CPU worker here): workers train, the parent reports."""
    from jobs.train import run as train_run

    monkeypatch.setattr(train_run, "gpus_to_launch", lambda: 1)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cfg = make_cfg(model_dir, str(tmp_path / "store"), max_steps=4)
    assert run_main(cfg, tmp_path) == 0
    assert "accelerate.commands.launch" in capfd.readouterr().err
    metrics = store.read_json(store.join(cfg["output"], "metrics.json"))
    manifest = store.read_json(cfg["manifest"])
    assert metrics["global_step"] == manifest["counts"]["steps"] == 4
    assert manifest["step"] == cfg["step"]


# ---------------------------------------------------------------------------------------------
# Kill and resume (a real process, checkpoints on S3)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_job_resumes_from_the_store_checkpoint(model_dir: Path, tmp_path: Path, s3_root: str) -> None:
    steps = 40
    cfg = make_cfg(model_dir, s3_root, save_steps=10, max_steps=steps, learning_rate=1e-3, logging_steps=10)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    env = os.environ | {"CREED_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "jobs.train", "--config", str(cfg_path)]

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    try:
        while core.newest_checkpoint(store.list_uris(cfg["checkpoints"]), cfg["checkpoints"]) is None:
            assert proc.poll() is None, "training ended before a checkpoint was copied"
            assert time.monotonic() < deadline, "no checkpoint in the store after 90 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not store.exists(cfg["manifest"])
    found = core.newest_checkpoint(store.list_uris(cfg["checkpoints"]), cfg["checkpoints"])
    assert found is not None and 10 <= found[0] < steps

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = store.read_json(store.join(cfg["output"], "metrics.json"))
    assert metrics["resumed_from_step"] == found[0]
    assert metrics["global_step"] == steps
    # the trainer state came back with the checkpoint: the loss curve spans both runs
    assert [p["step"] for p in metrics["loss_curve"]][-1] == steps
    assert min(p["step"] for p in metrics["loss_curve"]) <= found[0]
    assert store.read_json(cfg["manifest"])["counts"]["steps"] == steps
    events = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith('{"')]
    assert [e["step"] for e in events if e["event"] == "train.resume"] == [found[0]]
    saved = [e["step"] for e in events if e["event"] == "train.checkpoint_saved"]
    assert all(s > found[0] for s in saved)  # no step before the checkpoint was trained again

    # and it ends where an uninterrupted run ends (same data order, RNG and optimizer state)
    straight = make_cfg(
        model_dir,
        str(tmp_path / "straight"),
        **{k: cfg[k] for k in ("save_steps", "max_steps", "learning_rate", "logging_steps")},
    )
    assert run_main(straight, tmp_path) == 0
    ref = store.read_json(store.join(straight["output"], "metrics.json"))
    assert metrics["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-3)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_to_the_store_then_exits_75(
    model_dir: Path, tmp_path: Path, s3_root: str
) -> None:
    """Preemption or eviction mid-training: the step finishes its optimizer step, copies a checkpoint
    to the store, exits 75 (retried), and the retry resumes from exactly that step."""
    steps = 60
    # no periodic checkpoint before the end: the only one in the store is the one SIGTERM asked for
    cfg = make_cfg(model_dir, s3_root, save_steps=1000, max_steps=steps, learning_rate=1e-3, logging_steps=1)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    env = os.environ | {"CREED_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "jobs.train", "--config", str(cfg_path)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if '"train.progress"' in line and json.loads(line).get("step", 0) >= 5:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    proc.wait(timeout=120)
    events = [json.loads(x) for x in lines if x.startswith('{"')]
    assert proc.returncode == 75, "".join(lines)[-3000:]
    assert [e["event"] for e in events if e["event"] in ("train.stopping", "train.terminated")] == [
        "train.stopping",
        "train.terminated",
    ]
    found = core.newest_checkpoint(store.list_uris(cfg["checkpoints"]), cfg["checkpoints"])
    assert found is not None and 5 <= found[0] < steps
    assert not store.exists(cfg["manifest"]) and not store.exists(store.join(cfg["output"], "metrics.json"))

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = store.read_json(store.join(cfg["output"], "metrics.json"))
    assert (metrics["resumed_from_step"], metrics["global_step"]) == (found[0], steps)
