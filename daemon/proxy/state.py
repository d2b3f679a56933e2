"""The daemon's changing state, in one object the supervisor owns and hands to the addon.

``Runtime.active`` is an immutable snapshot (config, compiled routing table, lane endpoints with
their keys). A reload builds a whole new snapshot and swaps the one reference; a request reads the
reference once and keeps that snapshot for its whole life.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from ccmitm.config.keys import LaneKey, resolve_lane_key
from ccmitm.config.load import LoadedConfig
from ccmitm.config.model import Config, LaneConfig
from ccmitm.control.protocol import LaneCounters
from ccmitm.core.breaker import CircuitBreaker
from ccmitm.core.crosslane import SignatureRegistry
from ccmitm.core.refusals import LaneHold, RefusalClass
from ccmitm.core.routing import LaneConditions, RoutingTable
from ccmitm.core.stats import p50_p95
from ccmitm.logs.usage import TOKEN_FIELDS, UNMARKED, UsageRecord
from ccmitm.paths import write_private

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneEndpoint:
    """Where a lane's requests go and how they authenticate. ``key`` is never shown."""

    name: str
    scheme: str
    host: str
    port: int
    prefix: str  # path prefix kept in front of the request path, e.g. "/api/anthropic"
    header_mode: str  # "x-api-key", "authorization" or "passthrough"
    key: str | None = field(default=None, repr=False)
    problem: str | None = None  # why a keyed lane has no key

    @property
    def keyed(self) -> bool:
        return self.header_mode != "passthrough"

    @property
    def available(self) -> bool:
        return not self.keyed or self.key is not None

    @cached_property
    def auth_field(self) -> tuple[bytes, bytes] | None:
        """The lane key as the one header field a keyed lane's requests carry (built once)."""
        if not self.keyed or self.key is None:
            return None
        if self.header_mode == "authorization":
            return (b"authorization", f"Bearer {self.key}".encode())
        return (b"x-api-key", self.key.encode())

    @classmethod
    def build(cls, name: str, lane: LaneConfig, key: LaneKey | None) -> LaneEndpoint:
        parts = urlsplit(lane.url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(
            name=name,
            scheme=scheme,
            host=parts.hostname or "",
            port=port,
            prefix=parts.path.rstrip("/"),
            header_mode=lane.effective_header_mode,
            key=key.value if key else None,
            problem=key.problem if key else None,
        )


@dataclass(frozen=True)
class Snapshot:
    loaded: LoadedConfig
    table: RoutingTable
    lanes: Mapping[str, LaneEndpoint]

    @property
    def config(self) -> Config:
        return self.loaded.config

    @cached_property
    def upstream_proxy(self) -> tuple[str, tuple[str, int]] | None:
        """proxy.upstream_proxy as mitmproxy's server spec (scheme, (host, port)), or None."""
        url = self.config.proxy.upstream_proxy
        if url is None:
            return None
        parts = urlsplit(url)
        default_port = 443 if parts.scheme == "https" else 80
        return parts.scheme, (parts.hostname or "", parts.port or default_port)

    @cached_property
    def secret_values(self) -> frozenset[str]:
        """The lane keys of this snapshot: removed by exact value from all text ccmitm writes.
        Computed once per snapshot, which is rebuilt whenever a key changes."""
        return frozenset(lane.key for lane in self.lanes.values() if lane.key)

    @cached_property
    def unavailable(self) -> frozenset[str]:
        return frozenset(name for name, lane in self.lanes.items() if not lane.available)

    @classmethod
    def build(cls, loaded: LoadedConfig, environ: Mapping[str, str] = os.environ) -> Snapshot:
        config = loaded.config
        lanes = {
            name: LaneEndpoint.build(name, lane, resolve_lane_key(lane, environ))
            for name, lane in config.lanes.items()
        }
        return cls(loaded, RoutingTable.from_config(config), lanes)

    def waiting_key_files(self) -> dict[str, LaneConfig]:
        """Keyed lanes without a key that read it from a file: fixing the file (chmod 600,
        creating or filling it) can make them available without a reload."""
        return {
            name: self.config.lanes[name]
            for name in sorted(self.unavailable)
            if self.config.lanes[name].api_key_file
        }

    def with_keys(self, keys: Mapping[str, LaneKey]) -> Snapshot:
        """This snapshot with the given lanes' keys (found since it was built) put in."""
        lanes = dict(self.lanes)
        for name, key in keys.items():
            lanes[name] = LaneEndpoint.build(name, self.config.lanes[name], key)
        return replace(self, lanes=lanes)


class LatencyWindow:
    """The last ``size`` durations, for p50/p95 without unbounded memory."""

    def __init__(self, size: int = 1000):
        self._recent: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._recent.append(value)

    def p50_p95(self) -> tuple[float | None, float | None]:
        figures = p50_p95(self._recent)
        return _round(figures["p50"]), _round(figures["p95"])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class LaneStats:
    requests: int = 0
    errors: int = 0
    durations: LatencyWindow = field(default_factory=LatencyWindow)
    # Calls per Claude Code request class ("unmarked" when the client sent none); the keys are a
    # closed vocabulary (see usage.request_class_of), so this stays small.
    request_classes: Counter[str] = field(default_factory=Counter)
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))

    def counters(self) -> LaneCounters:
        p50, p95 = self.durations.p50_p95()
        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": p50,
            "p95_ms": p95,
            "by_request_class": dict(sorted(self.request_classes.items())),
            "tokens": {
                "input_tokens": self.tokens["input_tokens"],
                "output_tokens": self.tokens["output_tokens"],
                "cache_read_input_tokens": self.tokens["cache_read_input_tokens"],
                "cache_creation_input_tokens": self.tokens["cache_creation_input_tokens"],
            },
        }


@dataclass(frozen=True)
class PauseOverride:
    """A persisted ccctl pause/resume; it wins over the config until the config's value changes."""

    paused: bool
    at: str
    by: str


class PauseStore:
    """The kill-switch's persisted state: a small JSON file in the state dir (0600)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> PauseOverride | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return PauseOverride(bool(data["paused"]), str(data["at"]), str(data["by"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable pause state %s: %s", self.path, exc)
            return None

    def save(self, override: PauseOverride | None) -> None:
        if override is None:
            self.path.unlink(missing_ok=True)
            return
        data = {"paused": override.paused, "at": override.at, "by": override.by}
        write_private(self.path, json.dumps(data).encode())


class Runtime:
    """Everything that changes while the daemon runs. Touched from the event loop only."""

    def __init__(
        self,
        snapshot: Snapshot,
        pause_store: PauseStore | None = None,
        wall: Callable[[], float] = time.time,
    ):
        self.active = snapshot
        self.wall = wall  # the holds' clock (quota reset times are wall-clock); tests drive it
        self.started_at = datetime.now(UTC)
        self.started_monotonic = time.monotonic()
        self.pause_store = pause_store
        self.pause_override = pause_store.load() if pause_store else None
        self.stats: dict[str, LaneStats] = {}
        self.last_reload_error: str | None = None
        self.last_reload_error_at: str | None = None
        self.breakers: dict[str, CircuitBreaker] = {}
        # Holds next to the breakers: a quota/billing/auth/config refusal takes a keyed lane out
        # of rotation at once (see core/refusals.py); one per keyed lane, like the breakers.
        self.holds: dict[str, LaneHold] = {}
        # Signatures (as digests) of thinking blocks the offload lanes made: stripped on the way
        # to the default lane, which would reject them.
        self.foreign_signatures = SignatureRegistry()
        # The client token clients must show (proxy.client_auth); None when there is none. The
        # supervisor reads it from its file at start, reload and `ccctl token rotate`.
        self._client_token: str | None = None
        self._secrets: tuple[Snapshot, frozenset[str]] | None = None  # secret_values() of a snapshot
        self._sync_breakers(None)

    @property
    def client_token(self) -> str | None:
        return self._client_token

    @client_token.setter
    def client_token(self, token: str | None) -> None:
        self._client_token = token
        self._secrets = None

    def labelled_secrets(self) -> dict[str, str]:
        """Every secret value in use, by label (lane names, "client-token"): for the bundle and the
        daemon log, which say whose secret they removed."""
        values = {name: lane.key for name, lane in self.active.lanes.items() if lane.key}
        if self._client_token:
            values["client-token"] = self._client_token
        return values

    # --- kill-switch -----------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        if self.pause_override is not None:
            return self.pause_override.paused
        return self.active.config.routing.paused

    @property
    def paused_source(self) -> str:
        if self.pause_override is not None:
            where = self.pause_store.path if self.pause_store else "memory"
            return f"{self.pause_override.by} at {self.pause_override.at} (state file {where})"
        for override in self.active.loaded.overrides:
            if override.startswith("OFFLOAD_PAUSED"):
                return "environment OFFLOAD_PAUSED=1"
        return f"config routing.paused ({self.active.loaded.source})"

    def set_paused(self, paused: bool, by: str) -> None:
        self.pause_override = PauseOverride(paused, datetime.now(UTC).isoformat(timespec="seconds"), by)
        if self.pause_store:
            self.pause_store.save(self.pause_override)

    # --- config swap -----------------------------------------------------------------------------
    def swap(self, snapshot: Snapshot) -> None:
        previous = self.active
        self.active = snapshot
        self._sync_breakers(previous)
        self.last_reload_error = None
        self.last_reload_error_at = None
        # An edit of routing.paused in the file is the newest word on the kill-switch.
        if previous.config.routing.paused != snapshot.config.routing.paused and self.pause_override:
            self.pause_override = None
            if self.pause_store:
                self.pause_store.save(None)

    def _sync_breakers(self, previous: Snapshot | None) -> None:
        """One breaker per keyed lane; settings follow the config; a new key starts a lane afresh."""
        settings = self.active.config.breaker
        wanted = {name for name, lane in self.active.lanes.items() if lane.keyed}
        for name in list(self.breakers):
            if name not in wanted:
                del self.breakers[name]
        for name in list(self.holds):
            if name not in wanted:
                del self.holds[name]
        for name in wanted:
            hold = self.holds.setdefault(name, LaneHold(name, self.wall))
            if previous is None or hold.refusal is None:
                continue
            before = previous.lanes.get(name)
            new_account = (
                before is None
                or before.key != self.active.lanes[name].key
                or previous.config.lanes.get(name) != self.active.config.lanes.get(name)
            )
            new_rules = previous.config.routing.rules != self.active.config.routing.rules
            # A new key or lane config is the user acting on a hold (a new account, a fixed key):
            # the lane gets its chance again. New rules end a billing/auth/config hold (a fixed
            # model, say), but a used-up quota stays used up until its reset time.
            if (new_account or (new_rules and hold.refusal.cls is not RefusalClass.QUOTA)) and hold.clear():
                log.warning("lane %s hold ended: its key or config changed", name)
        for name in wanted:
            breaker = self.breakers.get(name)
            if breaker is None:
                label = "Z.AI" if "z.ai" in self.active.config.lanes[name].url else name
                self.breakers[name] = CircuitBreaker.from_config(name, settings, label=label)
                continue
            breaker.reconfigure(settings.failures, settings.window_s, settings.cooldown_s)
            before = previous.lanes.get(name) if previous else None
            if before is not None and before.key != self.active.lanes[name].key:
                breaker.reset()

    def adopt_keys(self, built_from: Snapshot, keys: Mapping[str, LaneKey]) -> list[str]:
        """Put keys found in fixed key files into the active snapshot; the lanes that became
        available. Nothing happens when a reload swapped the snapshot meanwhile (it read the
        files itself), so a late answer can never undo a newer config."""
        found = {name: key for name, key in keys.items() if key.value is not None}
        if self.active is not built_from or not found:
            return []
        previous = self.active
        self.active = previous.with_keys(found)
        self._sync_breakers(previous)
        return sorted(found)

    def secret_values(self) -> frozenset[str]:
        """Every secret the daemon itself holds (the active lane keys, the client token), for
        exact-value redaction of what it writes. The same object until one changes (a reload, a key
        file adopted, a token rotated), so callers may use it as a cache key; never built per
        request."""
        snapshot = self.active
        cached = self._secrets
        if cached is None or cached[0] is not snapshot:
            values = snapshot.secret_values
            if self._client_token:
                values = values | {self._client_token}
            self._secrets = cached = (snapshot, values)
        return cached[1]

    def reload_failed(self, message: str) -> None:
        self.last_reload_error = message
        self.last_reload_error_at = datetime.now(UTC).isoformat(timespec="seconds")

    # --- per-request inputs and outputs ------------------------------------------------------------
    def conditions(self) -> LaneConditions:
        open_lanes = frozenset(
            name for name, breaker in self.breakers.items() if not breaker.allows_request()
        )
        held = frozenset(name for name, hold in self.holds.items() if not hold.allows_request())
        return LaneConditions(
            paused=self.paused,
            unavailable=self.active.unavailable,
            breaker_open=open_lanes,
            held=held,
        )

    def reset_lane(self, name: str) -> bool:
        """``ccctl lane reset NAME``: end the lane's hold and close its breaker. False if no such
        keyed lane."""
        hold = self.holds.get(name)
        breaker = self.breakers.get(name)
        if hold is None and breaker is None:
            return False
        if hold is not None and hold.clear():
            log.warning("lane %s hold ended: ccctl lane reset", name)
        if breaker is not None:
            breaker.reset()
        return True

    def record(self, record: UsageRecord, failed: bool) -> None:
        """Count one finished call for status: requests, errors, latency, request class, tokens."""
        if record.lane is None:  # answered by ccmitm itself: no lane to count it for
            return
        stats = self.stats.setdefault(record.lane, LaneStats())
        stats.requests += 1
        stats.request_classes[record.request_class or UNMARKED] += 1
        if failed:
            stats.errors += 1
        if record.duration_ms is not None:
            stats.durations.add(record.duration_ms)
        for name in TOKEN_FIELDS:
            stats.tokens[name] += getattr(record, name) or 0

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 1)
