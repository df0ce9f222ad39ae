"""The response cache: every answered request in the store, keyed by its ``request_hash``.

The cache is also the crash-safe progress of a stage: each answer is written the moment it arrives,
so after ``kill -9`` a rerun re-asks only what was in flight. Errors are never cached. Two layouts
live side by side under the cache prefix, and reads look in both:

- **append-only logs** ``{cache}/log/{writer}.jsonl`` (a local store): each writer (one per client,
  so parallel steps never share a file) appends one JSON line per answer with a single ``write()``,
  no fsync; a record the kernel has is safe from a killed process. A line that does not parse (the
  torn last record of a killed writer, a power cut) is skipped with a warning, never fatal. Appending
  costs microseconds, where a new file per answer cost ~0.8 ms of kernel CPU.
- **one object per answer** ``{cache}/{hash[:2]}/{hash}.json`` (S3, and caches written before the
  logs): S3 cannot append, and batching answers into one object would lose the whole batch to a
  ``kill -9``, so each answer is its own PUT, a few in flight at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from pydantic import ValidationError

from jobs.common import store
from jobs.common.errors import NotFoundError
from jobs.common.logs import get_logger
from jobs.llm.request import ChatResult

LOG_DIR = "log"
#: Each log line starts with the hash, so a reader finds its entries without parsing the others.
_HEAD = b'{"request_hash":"'
_HASH_END = len(_HEAD) + 64
#: PUTs in flight at once when answers go to S3 (each waits on the network, not the CPU).
S3_WRITERS = 8


def log_line(result: ChatResult) -> bytes:
    """One log record: the result as a JSON object whose first field is its request hash."""
    body = result.model_dump_json(exclude={"cached", "request_hash"})
    return b'%s%s",%s\n' % (_HEAD, result.request_hash.encode("ascii"), body[1:].encode("utf-8"))


def _parse(raw: bytes | str, h: str) -> ChatResult | None:
    try:
        data = json.loads(raw)
        result = ChatResult.model_validate({**data, "cached": True})
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError, TypeError):
        return None
    return result if result.ok and result.request_hash == h else None


def _parse_any(line: bytes) -> ChatResult | None:
    return _parse(line, line[len(_HEAD) : _HASH_END].decode("ascii", "replace"))


class ResponseCache:
    """Answered requests in the store under ``prefix``: look them up, and write new ones."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def uri(self, h: str) -> str:
        """Where the one-object-per-answer layout keeps an answer."""
        return store.join(self.prefix, h[:2], f"{h}.json")

    def get(self, h: str) -> ChatResult | None:
        return self.get_many([h]).get(h)

    def get_many(self, hashes: Iterable[str]) -> dict[str, ChatResult]:
        """The cached answers among ``hashes`` (logs first, then one object per answer)."""
        wanted = set(hashes)
        found = self._from_logs(wanted) if wanted else {}
        rest = [h for h in wanted if h not in found]
        if not rest:
            return found
        objects: list[ChatResult | None]
        local = store.local_path(self.prefix)
        if local is not None:  # only the folders that exist: a cache with logs alone has none
            folders = {p.name for p in local.iterdir()} if local.is_dir() else set()
            objects = [self._object(h) for h in rest if h[:2] in folders]
        elif len(rest) == 1:
            objects = [self._object(rest[0])]
        else:  # S3 reads are small and latency-bound: many at once
            with ThreadPoolExecutor(max_workers=min(32, len(rest))) as pool:
                objects = list(pool.map(self._object, rest))
        found.update((r.request_hash, r) for r in objects if r is not None)
        return found

    def hashes(self) -> set[str]:
        """Every request hash with an answer in the cache (both layouts): what a rerun will not ask."""
        found: set[str] = set()
        for uri in store.list_uris(self.prefix):
            name = uri.rsplit("/", 1)[-1]
            if name.endswith(".jsonl"):
                found.update(
                    line[len(_HEAD) : _HASH_END].decode("ascii")
                    for line in _lines(uri)
                    if line.startswith(_HEAD) and line.endswith(b"\n") and _parse_any(line) is not None
                )
            elif name.endswith(".json") and self._object(name[: -len(".json")]) is not None:
                found.add(name[: -len(".json")])
        return found

    def writer(self) -> CacheWriter:
        if store.local_path(self.prefix) is not None:
            return LogWriter(self.prefix)
        return ObjectWriter(self)

    def _object(self, h: str) -> ChatResult | None:
        try:
            raw = store.read_bytes(self.uri(h))
        except NotFoundError:
            return None
        result = _parse(raw, h)
        if result is None:
            get_logger().warning("llm.cache_corrupt", uri=self.uri(h))
        return result

    def _from_logs(self, wanted: set[str]) -> dict[str, ChatResult]:
        found: dict[str, ChatResult] = {}
        for uri in store.list_uris(store.join(self.prefix, LOG_DIR)):
            if not uri.endswith(".jsonl"):
                continue
            torn = 0
            for line in _lines(uri):
                if not (line.startswith(_HEAD) and line.endswith(b"\n")):
                    torn += 1
                    continue
                h = line[len(_HEAD) : _HASH_END].decode("ascii", "replace")
                if h not in wanted or h in found:
                    continue
                result = _parse(line, h)
                if result is None:
                    torn += 1
                else:
                    found[h] = result
            if torn:  # a writer killed mid-record (or one still writing): its other records are good
                get_logger().warning("llm.cache_records_skipped", uri=uri, skipped=torn)
        return found


def _lines(uri: str) -> Iterator[bytes]:
    path = store.local_path(uri)
    if path is None:
        yield from store.read_bytes(uri).splitlines(keepends=True)
        return
    try:
        with open(path, "rb") as f:
            yield from f
    except FileNotFoundError:
        return


class CacheWriter:
    """Writes answers as they arrive; ``flush`` waits for every write so far and raises the first
    failure (the store is failing: progress is not being saved); ``close`` flushes and lets go."""

    def put(self, result: ChatResult) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class LogWriter(CacheWriter):
    """Appends to this writer's own log file, created on the first answer. One ``write()`` per answer
    on an ``O_APPEND`` descriptor, in the caller's thread: microseconds, so the event loop that
    delivers answers does it inline and no thread fights it for the GIL."""

    def __init__(self, prefix: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        path = store.local_path(store.join(prefix, LOG_DIR, name))
        assert path is not None  # LogWriter is only made for a local prefix
        self.path = path
        self._fd: int | None = None
        self.error: OSError | None = None
        self._reported = False

    def put(self, result: ChatResult) -> None:
        if not result.ok or result.cached or self.error is not None:
            return
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            line = log_line(result)
            if os.write(self._fd, line) != len(line):
                raise OSError(f"{self.path}: short write (disk full?)")
        except OSError as exc:
            self.error = exc

    def flush(self) -> None:
        if self.error is not None and not self._reported:
            self._reported = True  # raised once; later answers are not written either
            raise self.error

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.flush()


class ObjectWriter(CacheWriter):
    """One object per answer (S3), ``S3_WRITERS`` PUTs in flight."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=S3_WRITERS, thread_name_prefix="llm-cache")
        self._writes: list[Future[None]] = []

    def put(self, result: ChatResult) -> None:
        if not result.ok or result.cached:
            return
        data = result.model_dump_json(exclude={"cached"}).encode("utf-8")
        self._writes.append(self._pool.submit(store.write_bytes, self.cache.uri(result.request_hash), data))

    def flush(self) -> None:
        futures_wait(self._writes)
        failed = next((e for e in (w.exception() for w in self._writes) if e is not None), None)
        self._writes = []
        if failed is not None:
            raise failed

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)
