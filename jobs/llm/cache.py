"""The response cache: every answered request in the store, keyed by its ``request_hash``.

One small JSON object per request under ``{cache}/{hash[:2]}/{hash}.json``. Each answer is written the
moment it arrives, so the cache is also the crash-safe progress of a stage: after ``kill -9`` a rerun
re-asks only what was in flight. Errors are never cached.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pydantic import ValidationError

from jobs.common import store
from jobs.common.errors import NotFoundError
from jobs.common.logs import get_logger
from jobs.llm.request import ChatResult


class ResponseCache:
    """Answered requests in the store, one JSON object per request hash."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._dirs: set[Path] = set()

    def uri(self, h: str) -> str:
        return store.join(self.prefix, h[:2], f"{h}.json")

    def get(self, h: str) -> ChatResult | None:
        try:
            data = store.read_json(self.uri(h))
        except NotFoundError:
            return None
        except json.JSONDecodeError:
            get_logger().warning("llm.cache_corrupt", uri=self.uri(h))
            return None
        try:
            result = ChatResult.model_validate({**data, "cached": True})
        except ValidationError:
            get_logger().warning("llm.cache_corrupt", uri=self.uri(h))
            return None
        return result if result.ok and result.request_hash == h else None

    def put(self, result: ChatResult) -> None:
        if not result.ok or result.cached:
            return
        uri = self.uri(result.request_hash)
        data = result.model_dump_json(exclude={"cached"}).encode("utf-8")
        path = store.local_path(uri)
        if path is None:
            store.write_bytes(uri, data)
            return
        # On disk: write and rename (atomic against a killed process) without the store's fsync,
        # which costs ~1 ms of CPU per entry. An entry torn by a power cut reads as a miss.
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        tmp = path.with_name(f"{store.TMP_MARK}{os.getpid()}-{threading.get_native_id()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
