"""One interface over a local folder (the default, also ``file://``) and ``s3://bucket/key``.

Every function takes a full URI; the plan builder (``workflows.plan``) is the only place that
decides what those URIs are. Writes are atomic: locally a temp file in the same folder is renamed
over the target; on S3 the object appears only when a single PUT or a multipart upload completes.
So a reader never sees a half-written object, and a killed writer leaves nothing behind but a
hidden temp file that listings ignore.

S3 endpoint, region and credentials come from the standard AWS environment (``AWS_ENDPOINT_URL``
for MinIO or any S3-compatible server, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``).
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
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from jobs.common.errors import NotFoundError, StoreError

TMP_MARK = ".creed-tmp-"


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
# S3 client and error translation
# ---------------------------------------------------------------------------------------------
_client_lock = threading.Lock()
#: Every S3 call has a timeout and bounded retries (botocore's standard mode backs off with jitter).
_client_config: dict[str, int] = {"connect_timeout": 10, "read_timeout": 60, "max_attempts": 5}


@functools.cache
def _s3_client_cached(
    endpoint: str | None, region: str | None, key_id: str | None, timeouts: tuple[int, int, int]
) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(
        connect_timeout=timeouts[0],
        read_timeout=timeouts[1],
        retries={"max_attempts": timeouts[2], "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region or None, config=cfg)


def _s3() -> Any:
    # Keyed on the environment so that tests (and users) changing AWS_* get a fresh client.
    with _client_lock:
        return _s3_client_cached(
            os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
            os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            os.environ.get("AWS_ACCESS_KEY_ID"),
            (
                _client_config["connect_timeout"],
                _client_config["read_timeout"],
                _client_config["max_attempts"],
            ),
        )


def _translate(uri: str, exc: BaseException) -> StoreError:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StoreError(f"{uri}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, EndpointConnectionError | BotoConnectionError):
        return StoreError(
            f"{uri}: cannot reach S3 endpoint {endpoint}; check AWS_ENDPOINT_URL and that the server is up",
            transient=True,
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchBucket"}:
            bucket = _split_s3(uri)[0]
            return StoreError(f"{uri}: bucket '{bucket}' does not exist at {endpoint}; create it first")
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}:
            return StoreError(
                f"{uri}: S3 rejected the credentials ({code}); check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket policy"
            )
        if code in {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "503"}:
            return StoreError(f"{uri}: S3 error {code}; safe to retry", transient=True)
        return StoreError(f"{uri}: S3 error {code}: {exc}")
    return StoreError(f"{uri}: {exc}", transient=True)


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise NotFoundError(uri) from exc
        raise _translate(uri, exc) from exc
    except BotoCoreError as exc:
        raise _translate(uri, exc) from exc


# ---------------------------------------------------------------------------------------------
# Bytes and text
# ---------------------------------------------------------------------------------------------
def _atomic_local_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent / f"{TMP_MARK}{path.name}.{uuid.uuid4().hex[:8]}"


def _commit_local(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def write_bytes(uri: str, data: bytes) -> None:
    uri = normalize(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            _s3().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    tmp = _atomic_local_target(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _commit_local(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_bytes(uri: str) -> bytes:
    uri = normalize(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            return bytes(_s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    try:
        return Path(uri).read_bytes()
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise NotFoundError(uri) from exc


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
def open_write(uri: str, mode: str = "w") -> Iterator[IO[Any]]:
    """Stream into an object; it appears (atomically) only if the block exits without error."""
    uri = normalize(uri)
    binary = "b" in mode
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        # Spool to a local temp file, then upload: boto3 switches to multipart for large files,
        # and an incomplete multipart upload is never visible as an object.
        fd, tmpname = tempfile.mkstemp(prefix=TMP_MARK)
        try:
            with open(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
                yield f
            with _s3_errors(uri):
                _s3().upload_file(tmpname, bucket, key)
        finally:
            os.unlink(tmpname)
        return
    path = Path(uri)
    tmp = _atomic_local_target(path)
    try:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit_local(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


@contextlib.contextmanager
def open_read(uri: str, mode: str = "r") -> Iterator[IO[Any]]:
    """Stream out of an object without loading it whole."""
    uri = normalize(uri)
    binary = "b" in mode
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            body = _s3().get_object(Bucket=bucket, Key=key)["Body"]
        buffered = io.BufferedReader(_BodyIO(body), buffer_size=1 << 20)
        stream: IO[Any] = buffered if binary else io.TextIOWrapper(buffered, encoding="utf-8")
        try:
            yield stream
        finally:
            body.close()
        return
    try:
        f = open(uri, "rb" if binary else "r", encoding=None if binary else "utf-8")  # noqa: SIM115
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise NotFoundError(uri) from exc
    with f:
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
    uri = normalize(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        from botocore.exceptions import ClientError

        try:
            with _s3_errors(uri):
                _s3().head_object(Bucket=bucket, Key=key)
            return True
        except NotFoundError:
            return False
        except ClientError:
            raise
    return Path(uri).is_file()


def fingerprint(uri: str) -> str | None:
    """A digest of the object's content, or None if it does not exist: sha256 of a local file, the
    ETag on S3 (an MD5 of the bytes, or of the parts for a multipart upload: stable for the same
    bytes written the same way)."""
    uri = normalize(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            with _s3_errors(uri):
                return str(_s3().head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')
        except NotFoundError:
            return None
    h = hashlib.sha256()
    try:
        with open(uri, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return h.hexdigest()


def list_uris(prefix: str) -> list[str]:
    """All objects under a folder-like prefix (recursive), sorted, as full URIs."""
    prefix = normalize(prefix)
    if is_s3(prefix):
        bucket, key = _split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        out: list[str] = []
        with _s3_errors(prefix):
            for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                out.extend(f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []))
        return sorted(out)
    root = Path(prefix)
    if not root.is_dir():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith(TMP_MARK))


def delete(uri: str) -> None:
    uri = normalize(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            _s3().delete_object(Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)


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
            target = join(uri, p.relative_to(local).as_posix())
            if is_s3(normalize(target)):
                bucket, key = _split_s3(normalize(target))
                with _s3_errors(target):
                    _s3().upload_file(str(p), bucket, key)
            else:
                tpath = Path(normalize(target))
                tmp = _atomic_local_target(tpath)
                try:
                    shutil.copyfile(p, tmp)
                    _commit_local(tmp, tpath)
                finally:
                    tmp.unlink(missing_ok=True)
            n += 1
    return n


def download_dir(uri: str, local_dir: str | Path) -> int:
    """Copy every object under ``uri`` into ``local_dir``; returns the file count."""
    base = normalize(uri)
    local = Path(local_dir)
    uris = list_uris(base)
    if not uris:
        raise NotFoundError(base + "/")
    for u in uris:
        rel = u[len(base.rstrip("/")) + 1 :]
        dst = local / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if is_s3(u):
            bucket, key = _split_s3(u)
            with _s3_errors(u):
                _s3().download_file(bucket, key, str(dst))
        else:
            shutil.copyfile(u, dst)
    return len(uris)


def local_path(uri: str) -> Path | None:
    """The filesystem path of a local URI, or None for S3."""
    uri = normalize(uri)
    return None if is_s3(uri) else Path(uri)
