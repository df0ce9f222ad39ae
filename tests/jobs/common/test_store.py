"""The store: the same round trips on a local folder and on a real S3 server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.common import store
from jobs.common.errors import EXIT_BAD_INPUT, EXIT_TRANSIENT, NotFoundError, StoreError
from jobs.common.records import PromptItem


def test_bytes_text_json_round_trip(store_root: str) -> None:
    store.write_bytes(store.join(store_root, "a/b.bin"), b"\x00\x01\xff")
    assert store.read_bytes(store.join(store_root, "a/b.bin")) == b"\x00\x01\xff"
    store.write_text(store.join(store_root, "t.txt"), "héllo ✓")
    assert store.read_text(store.join(store_root, "t.txt")) == "héllo ✓"
    store.write_json(store.join(store_root, "j.json"), {"b": [1, 2], "a": None})
    assert store.read_json(store.join(store_root, "j.json")) == {"a": None, "b": [1, 2]}
    assert store.exists(store.join(store_root, "t.txt"))
    assert not store.exists(store.join(store_root, "nope.txt"))
    with pytest.raises(NotFoundError, match=r"nope\.txt"):
        store.read_text(store.join(store_root, "nope.txt"))


def test_jsonl_streams_100k_records(store_root: str) -> None:
    uri = store.join(store_root, "big.jsonl")
    rows = (PromptItem(id=f"p{i}", text=f"prompt number {i}") for i in range(100_000))
    assert store.write_jsonl(uri, rows) == 100_000
    n = 0
    for i, row in enumerate(store.read_jsonl(uri)):
        assert row["id"] == f"p{i}"
        n += 1
    assert n == 100_000


def test_listing_and_delete(store_root: str) -> None:
    for k in ["x/1.txt", "x/sub/2.txt", "y/3.txt"]:
        store.write_text(store.join(store_root, k), k)
    listed = store.list_uris(store.join(store_root, "x"))
    assert [u.rsplit("/", 2)[-2:] for u in listed] == [["x", "1.txt"], ["sub", "2.txt"]]
    assert store.list_uris(store.join(store_root, "missing")) == []
    assert store.delete_prefix(store.join(store_root, "x")) == 2
    assert store.list_uris(store.join(store_root, "x")) == []


def test_folder_upload_download(store_root: str, tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(300_000))
    (src / "sub" / "config.json").write_text('{"a": 1}')
    uri = store.join(store_root, "train/m/c/seed-0")
    assert store.upload_dir(src, uri) == 2
    dst = tmp_path / "back"
    assert store.download_dir(uri, dst) == 2
    assert (dst / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert (dst / "sub" / "config.json").read_text() == '{"a": 1}'


def test_failed_stream_leaves_nothing(store_root: str) -> None:
    uri = store.join(store_root, "partial.jsonl")
    with pytest.raises(RuntimeError), store.open_write(uri) as f:
        f.write('{"a": 1}\n')
        raise RuntimeError("writer died")
    assert not store.exists(uri)
    assert store.list_uris(store_root) == []


WRITER = """
import sys, time
from jobs.common import store
with store.open_write(sys.argv[1]) as f:
    for i in range(10_000_000):
        f.write('{"i": %d}\\n' % i)
        if i == 1000:
            print("writing", flush=True)
        if i % 1000 == 0:
            time.sleep(0.01)
"""


def test_killed_writer_leaves_no_partial_object(store_root: str) -> None:
    uri = store.join(store_root, "killed.jsonl")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri], stdout=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not store.exists(uri)
    assert store.list_uris(store_root) == []


def test_bad_json_line_names_uri_and_line(store_root: str) -> None:
    uri = store.join(store_root, "bad.jsonl")
    store.write_text(uri, '{"a": 1}\n{oops\n')
    with pytest.raises(StoreError, match=r"bad.jsonl:2: not valid JSON"):
        list(store.read_jsonl(uri))


def test_missing_bucket_is_one_clear_error(s3_env: str) -> None:
    with pytest.raises(StoreError, match=r"bucket 'no-such-bucket' does not exist") as exc:
        store.write_text("s3://no-such-bucket/x.txt", "x")
    assert exc.value.exit_code == EXIT_BAD_INPUT


def test_unreachable_endpoint_names_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setattr(store, "_client_config", {"connect_timeout": 1, "read_timeout": 1, "max_attempts": 1})
    with pytest.raises(StoreError, match="AWS_ENDPOINT_URL") as exc:
        store.read_text("s3://bucket/x.txt")
    assert exc.value.exit_code == EXIT_TRANSIENT


@pytest.mark.parametrize(
    ("code", "needle", "exit_code"),
    [
        ("InvalidAccessKeyId", "AWS_ACCESS_KEY_ID", EXIT_BAD_INPUT),
        ("SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY", EXIT_BAD_INPUT),
        ("SlowDown", "safe to retry", EXIT_TRANSIENT),
    ],
)
def test_s3_error_codes_become_clear_errors(code: str, needle: str, exit_code: int) -> None:
    # moto accepts any credentials, so the rejection paths are driven with botocore's own error type.
    from botocore.exceptions import ClientError

    err = store._translate("s3://b/k", ClientError({"Error": {"Code": code, "Message": "x"}}, "GetObject"))
    assert needle in str(err) and "s3://b/k" in str(err)
    assert err.exit_code == exit_code
