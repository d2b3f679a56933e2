"""The usage record (one JSON line per call) and its single writer.

The proxy's event loop hands finished records to :class:`UsageLog`, which serialises and appends
them on its own thread, so a slow disk never stalls a stream. Rotation requests travel through the
same queue as the lines, which is what makes rotation lossless: every line lands in exactly one
file, in order.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccmitm.core.redact import redact_text
from ccmitm.logs.files import RotatingAppendFile

log = logging.getLogger(__name__)

USAGE_FILE = "usage.jsonl"
_MAX_TEXT = 200


def clean_text(value: Any, limit: int = _MAX_TEXT, known: frozenset[str] = frozenset()) -> str | None:
    """User-controlled text made safe for a log line: no credential (a client could put a key in a
    model name, an upstream could echo one in an error), no control characters, bounded.

    ``known`` are secret values to remove by their exact value besides the redactor's patterns:
    the lane keys (``Runtime.secret_values()``) and the credentials the request itself carried.
    Pass the same frozenset object for many calls: its hash is computed once."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= _CACHED_TEXT:
        # Every call writes the same few models, paths, rules and session ids: clean each once.
        return _clean_cached(text, limit, known)
    return _clean(text, limit, known)


_CACHED_TEXT = 256


def _clean(text: str, limit: int, known: frozenset[str]) -> str:
    # Redact before replacing control characters: the redactor drops them to see a key split by
    # one (``sk-ant-\x00api03...``), which a space in its place would hide from it.
    text = redact_text(text[: limit * 4], known)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text[:limit]


_clean_cached = functools.lru_cache(maxsize=4096)(_clean)


#: Claude Code's own request classes (``x-claude-code-request-class``, Claude Code 2.1.x). It sends
#: it to api.anthropic.com by itself, to a custom base URL only with
#: ``CLAUDE_CODE_GATEWAY_HINT_HEADERS=1``, which `ccctl env --subagent` sets.
REQUEST_CLASSES = frozenset({"main", "subagent", "workflow", "compaction", "auxiliary", "side_reply"})
#: How status and summarize label a call whose request carried no request-class header.
UNMARKED = "unmarked"

#: The usage record's token counters, in the order reports show them.
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def request_class_of(value: str | None) -> str | None:
    """The request-class header as one of :data:`REQUEST_CLASSES`, ``"other"`` for anything else
    (so a hostile value can never become a new report column), None when absent."""
    if value is None:
        return None
    text = value.strip().lower()
    return text if text in REQUEST_CLASSES else "other"


@dataclass
class UsageRecord:
    ts: str
    id: str
    listener: str  # "intercept" or "reverse"
    lane: str | None  # None: answered by ccmitm itself, no lane contacted (reason says why)
    rule: str | None
    reason: str
    method: str
    path: str
    model: str | None
    upstream_model: str | None
    status: int | None
    stream: bool
    ttfb_ms: float | None
    duration_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_input_tokens: int | None
    cache_creation_input_tokens: int | None
    header_mode: str  # "x-api-key", "authorization" or "passthrough"
    http_version: str | None  # the client's hop
    upstream_http_version: str | None
    session: str | None
    error: str | None
    attempt_of: str | None = None  # for a failover: the id of the refused first attempt
    thinking_stripped: int | None = None  # offload-lane thinking blocks removed before the default lane
    request_class: str | None = None  # Claude Code's x-claude-code-request-class, normalised
    agent_type: str | None = None  # Claude Code's x-claude-code-agent-type (e.g. "custom")
    hold: str | None = None  # reason lane_hold: the hold's class ("quota", "billing", "auth", "config")
    refusal: str | None = None  # a refused offload attempt: its class ("quota", "transient", ...)

    def to_line(self) -> bytes:
        # vars(), not asdict(): every field is a plain value, and asdict's deep copy cost more
        # than the JSON encoding (the writer thread shares the GIL with the proxy's loop).
        return (json.dumps(vars(self), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


_STOP = object()
BATCH_WAIT_S = 0.02  # how long a line may wait for others to share its write (bounds the delay)
_LINES_PER_WRITE = 64


class UsageLog:
    """The one writer of usage.jsonl: a deque of pending lines and actions, a thread that owns the file."""

    def __init__(self, directory: Path, rotate_bytes: int, keep: int, daily: bool = True):
        self.file = RotatingAppendFile(directory / USAGE_FILE, rotate_bytes, keep, daily)
        # Records and actions wait in order in a deque; the queue only wakes an idle writer.
        self._pending: collections.deque[Any] = collections.deque()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._signalled = False
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self.lines_written = 0
        self.write_errors = 0

    @property
    def path(self) -> Path:
        return self.file.path

    def start(self) -> None:
        self._thread.start()

    def write(self, record: UsageRecord) -> None:
        self._submit(record)

    def _submit(self, item: Any) -> None:
        self._pending.append(item)
        if not self._signalled:
            self._signalled = True
            self._wake.put(None)

    def _call(self, action: str) -> Future[Any]:
        future: Future[Any] = Future()
        self._submit((action, future))
        return future

    def rotate(self) -> Future[Path | None]:
        return self._call("rotate")

    def rotate_if_due(self) -> Future[Path | None]:
        return self._call("rotate_if_due")

    def reopen(self) -> Future[None]:
        return self._call("reopen")

    def move_to(self, directory: Path) -> Future[None]:
        """Write to ``<directory>/usage.jsonl`` from the next queued line on (a changed logs.dir)."""
        future: Future[None] = Future()
        self._submit(("move", future, directory / USAGE_FILE))
        return future

    def close(self, timeout: float = 10.0) -> None:
        self._submit(_STOP)
        self._thread.join(timeout)
        self.file.close()

    def _run(self) -> None:
        while True:
            self._wake.get()  # idle: blocked until an item arrives
            # Busy: drain every BATCH_WAIT_S without being woken, so a call costs the proxy's
            # loop a deque append, not a cross-thread wake-up and a fight for the GIL; a burst of
            # calls becomes one write.
            while True:
                time.sleep(BATCH_WAIT_S)
                if self._drain():
                    return
                if not self._pending:
                    self._signalled = False  # from here on the next item wakes us again
                    if not self._pending:  # (one that came in just before is drained first)
                        break

    def _drain(self) -> bool:
        """Write and act on everything pending, in order. True when told to stop."""
        lines: list[bytes] = []
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, UsageRecord):
                lines.append(item.to_line())
                continue
            self._write_lines(lines)  # in order: lines before an action stay before it
            lines = []
            if item is _STOP:
                return True
            self._act(*item)
        self._write_lines(lines)
        return False

    def _write_lines(self, lines: list[bytes]) -> None:
        # Whole lines only, a bounded number per write, so size rotation stays close to its limit.
        for start in range(0, len(lines), _LINES_PER_WRITE):
            chunk = lines[start : start + _LINES_PER_WRITE]
            try:
                self.file.write(b"".join(chunk))
                self.lines_written += len(chunk)
            except OSError as exc:
                self.write_errors += len(chunk)
                log.error("usage log write failed: %s", exc)

    def _act(self, action: str, future: Future[Any], *args: Any) -> None:
        try:
            if action == "move":
                self.file.move_to(*args)
                future.set_result(None)
            elif action == "rotate":
                future.set_result(self.file.rotate())
            elif action == "rotate_if_due":
                future.set_result(self.file.rotate_if_due())
            elif action == "reopen":
                self.file.reopen()
                future.set_result(None)
            else:
                future.set_result(None)
        except Exception as exc:
            log.error("usage log %s failed: %s", action, exc)
            future.set_exception(exc)
