"""The store: the same round trips on a local folder and on two real S3 servers on loopback, moto
and ``rclone serve s3``. Where the servers differ, the test that shows it says how."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.common import store
from jobs.common.errors import EXIT_BAD_INPUT, EXIT_TRANSIENT, NotFoundError, StoreError
from jobs.common.records import PromptItem
from tests.conftest import S3Server

#: Above boto3's default multipart threshold (8 MiB): uploaded as three parts of 8, 8 and 1 MiB.
BIG = 17 * 1024 * 1024


def test_bytes_text_json_round_trip(any_store_root: str) -> None:
    root = any_store_root
    store.write_bytes(store.join(root, "a/b.bin"), b"\x00\x01\xff")
    assert store.read_bytes(store.join(root, "a/b.bin")) == b"\x00\x01\xff"
    store.write_text(store.join(root, "t.txt"), "héllo ✓")
    assert store.read_text(store.join(root, "t.txt")) == "héllo ✓"
    store.write_json(store.join(root, "j.json"), {"b": [1, 2], "a": None})
    assert store.read_json(store.join(root, "j.json")) == {"a": None, "b": [1, 2]}
    store.write_bytes(store.join(root, "empty"), b"")
    assert store.read_bytes(store.join(root, "empty")) == b""
    assert store.exists(store.join(root, "t.txt"))
    assert not store.exists(store.join(root, "nope.txt"))
    with pytest.raises(NotFoundError, match=r"nope\.txt"):
        store.read_text(store.join(root, "nope.txt"))


def test_jsonl_streams_100k_records(any_store_root: str) -> None:
    uri = store.join(any_store_root, "big.jsonl")
    rows = (PromptItem(id=f"p{i}", text=f"prompt number {i}") for i in range(100_000))
    assert store.write_jsonl(uri, rows) == 100_000
    n = 0
    for i, row in enumerate(store.read_jsonl(uri)):
        assert row["id"] == f"p{i}"
        n += 1
    assert n == 100_000


def test_listing_and_delete(any_store_root: str) -> None:
    root = any_store_root
    for k in ["x/1.txt", "x/sub/2.txt", "x/sub/deeper/3.txt", "xy/4.txt", "y/5.txt"]:
        store.write_text(store.join(root, k), k)
    listed = store.list_uris(store.join(root, "x"))
    # Sorted, recursive, full URIs; the sibling prefix "xy" is not under "x".
    assert [u[len(root) + 1 :] for u in listed] == ["x/1.txt", "x/sub/2.txt", "x/sub/deeper/3.txt"]
    assert listed == store.list_uris(store.join(root, "x/"))
    assert not store.exists(store.join(root, "x"))  # a folder is not an object
    assert store.list_uris(store.join(root, "missing")) == []
    assert store.list_uris(store.join(root, "y/5.txt")) == []  # an object is not a folder
    assert store.delete_prefix(store.join(root, "x")) == 3
    assert store.list_uris(store.join(root, "x")) == []
    assert [u[len(root) + 1 :] for u in store.list_uris(root)] == ["xy/4.txt", "y/5.txt"]
    store.delete(store.join(root, "x/1.txt"))  # deleting what is gone is not an error


def test_listing_pages_past_1000_objects(any_s3_root: str) -> None:
    # S3 returns at most 1000 keys a page; both servers must hand out continuation tokens.
    from concurrent.futures import ThreadPoolExecutor

    uris = [store.join(any_s3_root, "many", f"{i:04d}.txt") for i in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda u: store.write_text(u, "x"), uris))
    assert store.list_uris(store.join(any_s3_root, "many")) == uris


def test_folder_upload_download(any_store_root: str, tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(300_000))
    (src / "sub" / "config.json").write_text('{"a": 1}')
    uri = store.join(any_store_root, "train/m/c/seed-0")
    assert store.upload_dir(src, uri) == 2
    dst = tmp_path / "back"
    assert store.download_dir(uri, dst) == 2
    assert (dst / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert (dst / "sub" / "config.json").read_text() == '{"a": 1}'


def test_fingerprint_is_stable_for_the_same_bytes(any_store_root: str) -> None:
    a, b, c = (store.join(any_store_root, k) for k in ["a.jsonl", "sub/b.jsonl", "c.jsonl"])
    store.write_text(a, '{"x": 1}\n')
    store.write_text(b, '{"x": 1}\n')
    store.write_text(c, '{"x": 2}\n')
    fa = store.fingerprint(a)
    assert fa and fa == store.fingerprint(b) != store.fingerprint(c)
    store.write_text(a, '{"x": 1}\n')  # rewritten, same bytes
    assert store.fingerprint(a) == fa
    store.write_text(a, '{"x": 3}\n')
    assert store.fingerprint(a) != fa
    assert store.fingerprint(store.join(any_store_root, "nope")) is None


def test_failed_stream_leaves_nothing(any_store_root: str) -> None:
    uri = store.join(any_store_root, "partial.jsonl")
    with pytest.raises(RuntimeError), store.open_write(uri) as f:
        f.write('{"a": 1}\n')
        raise RuntimeError("writer died")
    assert not store.exists(uri)
    assert store.list_uris(any_store_root) == []
    # A failed rewrite keeps the old object whole.
    store.write_text(uri, "old\n")
    with pytest.raises(RuntimeError), store.open_write(uri) as f:
        f.write("new\n")
        raise RuntimeError("writer died")
    assert store.read_text(uri) == "old\n"
    if store.local_path(any_store_root) is not None:  # not even the hidden temp file
        assert sorted(p.name for p in Path(any_store_root).iterdir()) == ["partial.jsonl"]


def test_binary_stream_round_trip_above_the_multipart_threshold(any_s3: S3Server, any_s3_root: str) -> None:
    data = os.urandom(BIG)
    a, b, c = (store.join(any_s3_root, k) for k in ["a.bin", "b.bin", "c.bin"])
    for uri, payload in [(a, data), (b, data), (c, data[:-1] + bytes([data[-1] ^ 1]))]:
        with store.open_write(uri, "wb") as f:
            for i in range(0, len(payload), 1 << 20):  # streamed in 1 MiB writes
                f.write(payload[i : i + (1 << 20)])
    h = hashlib.md5()
    with store.open_read(a, "rb") as f:
        while block := f.read(1 << 16):
            h.update(block)
    assert h.hexdigest() == hashlib.md5(data).hexdigest()
    fa = store.fingerprint(a)
    assert fa == store.fingerprint(b) != store.fingerprint(c)
    # The servers disagree on what a multipart ETag is, and both keep creed's contract (the same
    # bytes written the same way give the same fingerprint; other bytes another): moto, like AWS,
    # returns the MD5 of the part MD5s and the part count; rclone returns the MD5 of the whole object,
    # so on rclone a single PUT and a multipart upload of the same bytes even agree.
    if any_s3.kind == "moto":
        assert fa is not None and fa.endswith("-3")
    else:
        assert fa == hashlib.md5(data).hexdigest()


def _pending_uploads(server: S3Server, bucket: str) -> list[str]:
    from botocore.exceptions import ClientError

    try:
        return [u["Key"] for u in server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    except ClientError as exc:
        # rclone answers NoSuchUpload, not an empty list, when it holds no upload state for the bucket.
        if exc.response["Error"]["Code"] == "NoSuchUpload":
            return []
        raise


def _leftovers(server: S3Server, bucket: str) -> list[str]:
    """Everything a failed write could have left on the server: objects, unfinished multipart
    uploads, and, for rclone, any file on disk in the served bucket folder (its multipart uploads
    go to hidden ``.rclone_temp_multipart_*`` files there)."""
    objects = [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    found = objects + [f"pending upload: {k}" for k in _pending_uploads(server, bucket)]
    if server.folder is not None:
        found += [f"on disk: {p}" for p in (server.folder / bucket).rglob("*") if p.is_file()]
    return found


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temp folder for the store's local spool files, so the test can see they go."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@contextlib.contextmanager
def _part_uploads_fail(after: int) -> Iterator[None]:
    """Every UploadPart after the first ``after`` fails as a dropped connection would."""
    from botocore.exceptions import EndpointConnectionError

    client, calls = store._s3(), itertools.count(1)

    def fail(**_: Any) -> None:
        if next(calls) > after:
            raise EndpointConnectionError(endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    client.meta.events.register("before-call.s3.UploadPart", fail)
    try:
        yield
    finally:
        client.meta.events.unregister("before-call.s3.UploadPart", fail)


@pytest.mark.parametrize("when", ["while writing", "while uploading"])
def test_failed_stream_leaves_nothing_on_the_server(
    when: str, any_s3: S3Server, any_s3_root: str, spool: Path
) -> None:
    bucket = any_s3_root[len("s3://") :].split("/")[0]
    uri = store.join(any_s3_root, "big.bin")
    if when == "while writing":
        with pytest.raises(RuntimeError), store.open_write(uri, "wb") as f:
            f.write(os.urandom(BIG))
            raise RuntimeError("writer died")
    else:  # the multipart upload starts, one part lands, the rest fail: it must be aborted
        with (
            _part_uploads_fail(after=1),
            pytest.raises(StoreError, match="AWS_ENDPOINT_URL") as exc,
            store.open_write(uri, "wb") as f,
        ):
            f.write(os.urandom(BIG))
        assert exc.value.exit_code == EXIT_TRANSIENT
    assert not store.exists(uri)
    deadline = time.monotonic() + 5  # rclone removes its temp file just after answering the abort
    while (left := _leftovers(any_s3, bucket)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []
    assert list(spool.iterdir()) == []


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


def test_killed_writer_leaves_no_partial_object(any_store_root: str) -> None:
    uri = store.join(any_store_root, "killed.jsonl")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri], stdout=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not store.exists(uri)
    assert store.list_uris(any_store_root) == []


def test_bad_json_line_names_uri_and_line(any_store_root: str) -> None:
    uri = store.join(any_store_root, "bad.jsonl")
    store.write_text(uri, '{"a": 1}\n{oops\n')
    with pytest.raises(StoreError, match=r"bad.jsonl:2: not valid JSON"):
        list(store.read_jsonl(uri))


def test_missing_key_is_not_found(any_store_root: str, tmp_path: Path) -> None:
    uri = store.join(any_store_root, "nope.jsonl")
    for read in [store.read_bytes, store.read_text, lambda u: list(store.read_jsonl(u))]:
        with pytest.raises(NotFoundError, match=r"nope\.jsonl: no such object") as exc:
            read(uri)
        assert exc.value.exit_code == EXIT_BAD_INPUT
    with pytest.raises(NotFoundError), store.open_read(uri, "rb"):
        pass
    assert not store.exists(uri)
    assert store.fingerprint(uri) is None
    store.delete(uri)
    with pytest.raises(NotFoundError, match=r"nope\.jsonl/"):
        store.download_dir(uri, tmp_path / "dst")


def test_missing_bucket_is_one_clear_error(any_s3: S3Server, tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.bin").write_bytes(b"a")
    root = "s3://no-such-bucket/root"
    uri = store.join(root, "x.jsonl")
    calls: list[Callable[[], object]] = [
        lambda: store.write_text(uri, "x"),
        lambda: store.write_jsonl(uri, [{"a": 1}]),  # streamed: goes through the transfer manager
        lambda: store.upload_dir(tmp_path / "ckpt", root),
        lambda: store.read_text(uri),
        lambda: store.list_uris(root),
    ]
    for call in calls:
        with pytest.raises(StoreError, match=r"bucket 'no-such-bucket' does not exist") as exc:
            call()
        assert exc.value.exit_code == EXIT_BAD_INPUT
    # HEAD responses have no body, so a missing bucket looks like a missing key there.
    assert not store.exists(uri)


@pytest.mark.parametrize("any_s3", ["rclone"], indirect=True)
@pytest.mark.parametrize("wrong", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
@pytest.mark.parametrize("op", ["read", "write", "stream", "exists", "list"])
def test_rejected_credentials_name_the_variables(
    any_s3: S3Server, any_s3_root: str, wrong: str, op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rclone only: moto accepts any credentials. rclone answers InvalidAccessKeyId or
    # SignatureDoesNotMatch, and a bare 403 to HEAD; test_s3_error_codes_become_clear_errors covers
    # the other codes AWS uses.
    uri = store.join(any_s3_root, "x.txt")
    store.write_text(uri, "x")
    right = os.environ[wrong]
    monkeypatch.setenv(wrong, "wrong")
    ops: dict[str, Callable[[], object]] = {
        "read": lambda: store.read_text(uri),
        "write": lambda: store.write_text(uri, "y"),
        "stream": lambda: store.write_jsonl(uri, [{"a": 1}]),
        "exists": lambda: store.exists(uri),
        "list": lambda: store.list_uris(any_s3_root),
    }
    with pytest.raises(StoreError, match=r"S3 rejected the credentials") as exc:
        ops[op]()
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert "AWS_ACCESS_KEY_ID" in str(exc.value) and "AWS_SECRET_ACCESS_KEY" in str(exc.value)
    monkeypatch.setenv(wrong, right)  # and the right ones work again, in the same process
    assert store.read_text(uri) == "x"


def test_missing_credentials_name_the_variables(
    any_s3_root: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as exc:
        store.read_text(store.join(any_s3_root, "x.txt"))
    assert exc.value.exit_code == EXIT_BAD_INPUT


def _fast_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_client_config", {"connect_timeout": 1, "read_timeout": 1, "max_attempts": 1})


def test_unreachable_endpoint_names_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    _fast_fail(monkeypatch)
    with pytest.raises(StoreError, match="AWS_ENDPOINT_URL") as exc:
        store.read_text("s3://bucket/x.txt")
    assert exc.value.exit_code == EXIT_TRANSIENT


@pytest.mark.parametrize("short_lived_s3", ["moto", "rclone"], indirect=True)
def test_server_that_goes_away_is_transient(
    short_lived_s3: tuple[S3Server, Callable[[], None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, stop = short_lived_s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret)
    _fast_fail(monkeypatch)
    server.client().create_bucket(Bucket="gone")
    store.write_text("s3://gone/x.txt", "x")  # the client now holds a pooled connection
    stop()
    for call in [lambda: store.read_text("s3://gone/x.txt"), lambda: store.write_jsonl("s3://gone/y", [{}])]:
        with pytest.raises(StoreError, match="AWS_ENDPOINT_URL") as exc:
            call()
        assert exc.value.exit_code == EXIT_TRANSIENT


def test_object_and_folder_of_the_same_name(
    any_s3: S3Server, any_s3_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 keys are flat, so moto keeps both "k" and "k/child". rclone maps keys to files, like the
    # local backend, and answers a bare 500 InternalError, which the store can only report as
    # "safe to retry" (exit 75). Worse, after a failed write of "k" over the folder "k/", rclone
    # 1.75 lists a phantom object "k" and hides "k/child" until its directory cache expires (the
    # files stay on disk). Creed never needs both names: the plan builder puts objects only at the
    # leaves of a folder tree, which a local store requires anyway.
    _fast_fail(monkeypatch)
    file, child = store.join(any_s3_root, "p/k"), store.join(any_s3_root, "p/k/child")
    store.write_text(file, "1")
    if any_s3.kind == "moto":
        store.write_text(child, "2")
        assert store.read_text(child) == "2"
    else:
        with pytest.raises(StoreError, match="InternalError") as exc:
            store.write_text(child, "2")
        assert exc.value.exit_code == EXIT_TRANSIENT
    assert store.read_text(file) == "1"
    folder, child = store.join(any_s3_root, "q/k"), store.join(any_s3_root, "q/k/child")
    store.write_text(child, "1")
    if any_s3.kind == "moto":
        store.write_text(folder, "2")
        assert store.read_text(folder) == "2"
        assert store.read_text(child) == "1"
    else:
        with pytest.raises(StoreError, match="InternalError"):
            store.write_text(folder, "2")
        assert any_s3.folder is not None
        assert (any_s3.folder / any_s3_root[len("s3://") :] / "q/k/child").read_text() == "1"


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
