"""Shared fixtures: a real S3 HTTP server on loopback (moto), store roots on it and on disk, and
tiny random models built on the spot. Nothing here touches the network beyond 127.0.0.1."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CREED_LOG_FORMAT", "json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on loopback for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the store (and any subprocess) at the loopback S3 server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


@pytest.fixture
def s3_root(s3_env: str) -> str:
    """A fresh bucket on the loopback S3 server; yields ``s3://bucket/root``."""
    import boto3

    bucket = f"creed-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


@pytest.fixture(params=["local", "s3"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a local folder and against S3 on loopback."""
    if request.param == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_root"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with its own tokenizer (read-only; copy it before changing it)."""
    from jobs.llm.tiny import build_llama

    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


# The loopback OpenAI-compatible server (teacher and judge), shared by every test module.
from tests.fakes.openai_server import openai_server  # noqa: E402, F401
