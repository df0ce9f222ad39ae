"""One interface over a local folder (the default, also ``file://``) and ``s3://bucket/key``.

Every function takes a full URI; the plan builder (``workflows.plan``) is the only place that
decides what those URIs are. Writes are atomic: locally a temp file in the same folder is renamed
over the target; on S3 the object appears only when a single PUT or a multipart upload completes.
So a reader never sees a half-written object, and a killed writer leaves nothing behind but a
hidden temp file that listings ignore.

The module-level functions normalize the URI, pick a backend once (``LocalBackend`` or
``S3Backend``, both implementing ``Backend``) and leave text, JSON and folders to shared code, so
each backend only moves bytes.

S3 endpoint, region and credentials come from the standard AWS environment (``AWS_ENDPOINT_URL``
for MinIO or any S3-compatible server, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``). Tested against two real servers on loopback: moto and ``rclone serve s3``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import BaseModel

from jobs.common.errors import NotFoundError, StoreError

TMP_MARK = ".creed-tmp-"
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------------------------
def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def normalize(uri: str) -> str:
    """Local paths become absolute ``file://``-less paths; S3 URIs are kept, without a trailing slash."""
    if is_s3(uri):
        return uri.rstrip("/") if uri.count("/") > 2 else uri
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return str(Path(uri).expanduser().absolute())


def join(base: str, *parts: str) -> str:
    """Join path parts onto a store URI. Used by the plan builder; stages receive finished URIs."""
    out = base.rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StoreError(f"{uri}: an S3 URI needs a bucket, e.g. s3://my-bucket/experiments")
    return bucket, key


# ---------------------------------------------------------------------------------------------
# Backends: bytes in, bytes out. URIs arrive normalized; streams are binary.
# ---------------------------------------------------------------------------------------------
class Backend(Protocol):
    def read_bytes(self, uri: str) -> bytes: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def open_read(self, uri: str) -> AbstractContextManager[IO[bytes]]: ...
    def open_write(self, uri: str) -> AbstractContextManager[IO[bytes]]: ...
    def exists(self, uri: str) -> bool: ...
    def fingerprint(self, uri: str) -> str | None: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, uri: str) -> None: ...
    def upload_file(self, src: Path, uri: str) -> None: ...
    def download_file(self, uri: str, dst: Path) -> None: ...


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A temp file beside ``path``, renamed over it only if the block exits without error.

    The temp name starts with ``TMP_MARK`` so that listings skip it; a killed writer leaves only that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_MARK}{path.name}.{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LocalBackend:
    """A folder on disk; URIs are absolute paths."""

    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise NotFoundError(uri) from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        with _atomic_file(Path(uri)) as f:
            f.write(data)

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[IO[bytes]]:
        try:
            f = open(uri, "rb")  # noqa: SIM115 - closed below; only the open itself maps to NotFound
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise NotFoundError(uri) from exc
        with f:
            yield f

    def open_write(self, uri: str) -> AbstractContextManager[IO[bytes]]:
        return _atomic_file(Path(uri))

    def exists(self, uri: str) -> bool:
        return Path(uri).is_file()

    def fingerprint(self, uri: str) -> str | None:
        h = hashlib.sha256()
        try:
            with open(uri, "rb") as f:
                for block in iter(lambda: f.read(_CHUNK), b""):
                    h.update(block)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return h.hexdigest()

    def list(self, prefix: str) -> list[str]:
        root = Path(prefix)
        if not root.is_dir():
            return []
        return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith(TMP_MARK))

    def delete(self, uri: str) -> None:
        Path(uri).unlink(missing_ok=True)

    def upload_file(self, src: Path, uri: str) -> None:
        with _atomic_file(Path(uri)) as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, _CHUNK)

    def download_file(self, uri: str, dst: Path) -> None:
        shutil.copyfile(uri, dst)


# S3 client, error translation ----------------------------------------------------------------
_client_lock = threading.Lock()
#: Every S3 call has a timeout and bounded retries (botocore's standard mode backs off with jitter).
_client_config: dict[str, int] = {"connect_timeout": 10, "read_timeout": 60, "max_attempts": 5}


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@functools.cache
def _s3_client_cached(
    endpoint: str | None,
    region: str | None,
    credentials: tuple[str | None, str | None],
    timeouts: tuple[int, int, int],
) -> Any:
    # boto3 reads the credentials from the environment itself; they are in the key only so that a
    # changed key id or secret gets a fresh client (the secret as a digest, never kept in clear).
    # A new session each time: boto3's default session resolves credentials once and keeps them.
    import boto3
    from botocore.config import Config

    cfg = Config(
        connect_timeout=timeouts[0],
        read_timeout=timeouts[1],
        retries={"max_attempts": timeouts[2], "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint or None, region_name=region or None, config=cfg)


def _digest(secret: str | None) -> str | None:
    return None if secret is None else hashlib.sha256(secret.encode()).hexdigest()


def _s3() -> Any:
    # Keyed on the environment so that tests (and users) changing AWS_* get a fresh client.
    with _client_lock:
        return _s3_client_cached(
            _endpoint(),
            os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            (os.environ.get("AWS_ACCESS_KEY_ID"), _digest(os.environ.get("AWS_SECRET_ACCESS_KEY"))),
            (
                _client_config["connect_timeout"],
                _client_config["read_timeout"],
                _client_config["max_attempts"],
            ),
        )


#: Error codes as S3 spells them, and as bodiless HEAD responses carry them (the HTTP status).
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}
_RETRYABLE = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "503"}


def _translate(uri: str, exc: BaseException) -> StoreError:
    """The one place where a boto3 or botocore error becomes a StoreError with its exit code."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    # The transfer manager (upload_file, download_file) wraps the error that stopped it.
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        exc = exc.__context__
    elif isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        exc = exc.last_exception
    endpoint = _endpoint() or "the default AWS endpoint"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StoreError(f"{uri}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, EndpointConnectionError | BotoConnectionError):
        return StoreError(
            f"{uri}: cannot reach S3 endpoint {endpoint}; check AWS_ENDPOINT_URL and that the server is up",
            transient=True,
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return NotFoundError(uri)
        if code == "NoSuchBucket":
            bucket = _split_s3(uri)[0]
            return StoreError(f"{uri}: bucket '{bucket}' does not exist at {endpoint}; create it first")
        if code in _BAD_CREDENTIALS:
            return StoreError(
                f"{uri}: S3 rejected the credentials ({code}); check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket policy"
            )
        if code in _RETRYABLE:
            return StoreError(f"{uri}: S3 error {code}; safe to retry", transient=True)
        return StoreError(f"{uri}: S3 error {code}: {exc}")
    return StoreError(f"{uri}: {exc}", transient=True)


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise _translate(uri, exc) from exc


class _BodyIO(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, so the io stack can buffer and decode it."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        n = len(data)
        b[:n] = data
        return n


class S3Backend:
    """``s3://bucket/key`` on AWS or any S3-compatible server; every call goes through ``_s3_errors``."""

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            return bytes(_s3().get_object(Bucket=bucket, Key=key)["Body"].read())

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            _s3().put_object(Bucket=bucket, Key=key, Body=data)

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[IO[bytes]]:
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            body = _s3().get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield io.BufferedReader(_BodyIO(body), buffer_size=_CHUNK)
        finally:
            body.close()

    @contextlib.contextmanager
    def open_write(self, uri: str) -> Iterator[IO[bytes]]:
        # Spool to a local temp file, then upload: boto3 switches to multipart for large files,
        # and an incomplete multipart upload is never visible as an object.
        fd, tmpname = tempfile.mkstemp(prefix=TMP_MARK)
        try:
            with open(fd, "wb") as f:
                yield f
            self.upload_file(Path(tmpname), uri)
        finally:
            os.unlink(tmpname)

    def _head(self, uri: str) -> dict[str, Any] | None:
        bucket, key = _split_s3(uri)
        try:
            with _s3_errors(uri):
                return dict(_s3().head_object(Bucket=bucket, Key=key))
        except NotFoundError:
            return None

    def exists(self, uri: str) -> bool:
        return self._head(uri) is not None

    def fingerprint(self, uri: str) -> str | None:
        head = self._head(uri)
        return None if head is None else str(head["ETag"]).strip('"')

    def list(self, prefix: str) -> list[str]:
        bucket, key = _split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        out: list[str] = []
        with _s3_errors(prefix):
            for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                out.extend(f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []))
        return sorted(out)

    def delete(self, uri: str) -> None:
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            _s3().delete_object(Bucket=bucket, Key=key)

    def upload_file(self, src: Path, uri: str) -> None:
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            _s3().upload_file(str(src), bucket, key)

    def download_file(self, uri: str, dst: Path) -> None:
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            _s3().download_file(bucket, key, str(dst))


_LOCAL = LocalBackend()
_S3 = S3Backend()


def _backend(uri: str) -> Backend:
    return _S3 if is_s3(uri) else _LOCAL


def _resolve(uri: str) -> tuple[Backend, str]:
    uri = normalize(uri)
    return _backend(uri), uri


# ---------------------------------------------------------------------------------------------
# Bytes and text
# ---------------------------------------------------------------------------------------------
def write_bytes(uri: str, data: bytes) -> None:
    backend, uri = _resolve(uri)
    backend.write_bytes(uri, data)


def read_bytes(uri: str) -> bytes:
    backend, uri = _resolve(uri)
    return backend.read_bytes(uri)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(_jsonable(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return obj


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _as_text(raw: IO[bytes]) -> Iterator[IO[str]]:
    """UTF-8 text over a backend's binary stream; the backend keeps closing (and committing) it."""
    text = io.TextIOWrapper(raw, encoding="utf-8")
    try:
        yield text
    finally:
        text.detach()  # flushes, and leaves ``raw`` open for the backend


@contextlib.contextmanager
def open_write(uri: str, mode: str = "w") -> Iterator[IO[Any]]:
    """Stream into an object; it appears (atomically) only if the block exits without error."""
    backend, uri = _resolve(uri)
    with backend.open_write(uri) as raw:
        if "b" in mode:
            yield raw
        else:
            with _as_text(raw) as f:
                yield f


@contextlib.contextmanager
def open_read(uri: str, mode: str = "r") -> Iterator[IO[Any]]:
    """Stream out of an object without loading it whole."""
    backend, uri = _resolve(uri)
    with backend.open_read(uri) as raw:
        if "b" in mode:
            yield raw
        else:
            with _as_text(raw) as f:
                yield f


def write_jsonl(uri: str, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write records one per line, streaming; returns the number written."""
    n = 0
    with open_write(uri) as f:
        for row in rows:
            f.write(to_json_line(row))
            n += 1
    return n


def to_json_line(row: BaseModel | dict[str, Any]) -> str:
    if isinstance(row, BaseModel):
        return row.model_dump_json() + "\n"
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


def read_jsonl(uri: str) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-blank line, streaming. Bad JSON raises with ``uri:line``."""
    with open_read(uri) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise StoreError(f"{uri}:{lineno}: not valid JSON ({exc.msg})") from exc


# ---------------------------------------------------------------------------------------------
# Listing, existence, deletion
# ---------------------------------------------------------------------------------------------
def exists(uri: str) -> bool:
    backend, uri = _resolve(uri)
    return backend.exists(uri)


def fingerprint(uri: str) -> str | None:
    """A digest of the object's content, or None if it does not exist: sha256 of a local file, the
    ETag on S3 (an MD5 of the bytes, or of the parts for a multipart upload: stable for the same
    bytes written the same way)."""
    backend, uri = _resolve(uri)
    return backend.fingerprint(uri)


def list_uris(prefix: str) -> list[str]:
    """All objects under a folder-like prefix (recursive), sorted, as full URIs."""
    backend, prefix = _resolve(prefix)
    return backend.list(prefix)


def delete(uri: str) -> None:
    backend, uri = _resolve(uri)
    backend.delete(uri)


def delete_prefix(prefix: str) -> int:
    uris = list_uris(prefix)
    for u in uris:
        delete(u)
    return len(uris)


# ---------------------------------------------------------------------------------------------
# Folders (model checkpoints)
# ---------------------------------------------------------------------------------------------
def upload_dir(local_dir: str | Path, uri: str) -> int:
    """Copy every file under ``local_dir`` to ``uri/<relative path>``; returns the file count."""
    local = Path(local_dir)
    if not local.is_dir():
        raise StoreError(f"{local}: not a folder; nothing to upload")
    n = 0
    for p in sorted(local.rglob("*")):
        if p.is_file():
            backend, target = _resolve(join(uri, p.relative_to(local).as_posix()))
            backend.upload_file(p, target)
            n += 1
    return n


def download_dir(uri: str, local_dir: str | Path) -> int:
    """Copy every object under ``uri`` into ``local_dir``; returns the file count."""
    backend, base = _resolve(uri)
    local = Path(local_dir)
    uris = backend.list(base)
    if not uris:
        raise NotFoundError(base + "/")
    for u in uris:
        dst = local / u[len(base.rstrip("/")) + 1 :]
        dst.parent.mkdir(parents=True, exist_ok=True)
        backend.download_file(u, dst)
    return len(uris)


def local_path(uri: str) -> Path | None:
    """The filesystem path of a local URI, or None for S3."""
    uri = normalize(uri)
    return None if is_s3(uri) else Path(uri)
