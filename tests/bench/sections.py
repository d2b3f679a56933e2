"""The benchmark sections that go over loopback sockets: latency, streaming lag, throughput and
scale, memory. Each takes the running ``Bench`` (processes, targets, knobs) and returns plain data.

Every section interleaves its variants in rounds (a rotated order each round) so that the
machine's drift (other processes, CPU frequency) lands on all variants alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rawhttp import Connection, Target
from stats import percentile, ratio, rotated, summary

from tests.helpers import CLIENT_API_KEY

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-5"
HEADERS = {
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "x-api-key": CLIENT_API_KEY,
}
_STAMP = re.compile(rb'"text":"(\d{6,})"')


def body(model: str, stream: bool = False) -> bytes:
    payload: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say ok."}],
    }
    if stream:
        payload["stream"] = True
    return json.dumps(payload).encode()


@dataclass(frozen=True)
class Variant:
    name: str
    target: Target
    model: str
    proxy: str  # "direct", "bare" or "ccmitmd"
    listener: str  # "direct", "reverse" or "intercept"
    pid: int | None = None  # the proxy process, for its CPU time


def cpu_ns(pid: int | None) -> int:
    """CPU time the process has used so far, all threads (schedstat: ns, not 10 ms ticks)."""
    if pid is None:
        return 0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def _call(
    conn: Connection, model: str, stream: bool = False, extra: dict[str, str] | None = None
) -> int:
    status, _ = await conn.post("/v1/messages", body(model, stream), {**HEADERS, **(extra or {})})
    return status


# --- 1. per-request overhead -----------------------------------------------------------------------
async def latency(variants: list[Variant], rounds: int, batch: int, warmup: int) -> dict[str, Any]:
    conns = {v.name: Connection(v.target) for v in variants}
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    per_round: dict[str, list[float]] = {v.name: [] for v in variants}  # each round's median
    cpu: dict[str, int] = {v.name: 0 for v in variants}
    for v in variants:
        for _ in range(warmup):
            assert await _call(conns[v.name], v.model) == 200, v.name
    for round_no in range(rounds):
        for v in rotated(variants, round_no):
            conn = conns[v.name]
            cpu_start = cpu_ns(v.pid)
            batch_ms = []
            for _ in range(batch):
                start = time.perf_counter_ns()
                status = await _call(conn, v.model)
                batch_ms.append((time.perf_counter_ns() - start) / 1e6)
                assert status == 200, (v.name, status)
            cpu[v.name] += cpu_ns(v.pid) - cpu_start
            samples[v.name] += batch_ms
            per_round[v.name].append(percentile(batch_ms, 0.5))
    for conn in conns.values():
        await conn.close()
    stats = {name: summary(values) for name, values in samples.items()}
    for name, used in cpu.items():
        # The proxy's own CPU per call: far steadier than wall time on a shared machine.
        stats[name]["proxy_cpu_us"] = round(used / 1000 / len(samples[name]), 1) if used else None
    by_name = {v.name: v for v in variants}
    direct = next(v.name for v in variants if v.proxy == "direct")
    rows = []
    for v in variants:
        if v.proxy != "ccmitmd":
            continue
        bare = next(b.name for b in variants if b.proxy == "bare" and b.listener == v.listener)
        p50, p95 = stats[v.name]["p50_ms"], stats[v.name]["p95_ms"]
        row = {
            "variant": v.name,
            "listener": v.listener,
            "route": "rerouted (Haiku → offload lane)" if v.model == HAIKU else "pass-through (Sonnet)",
            "vs_bare_p50": ratio(p50, stats[bare]["p50_ms"]),
            "vs_bare_p95": ratio(p95, stats[bare]["p95_ms"]),
            "vs_direct_p50": ratio(p50, stats[direct]["p50_ms"]),
            "vs_direct_p95": ratio(p95, stats[direct]["p95_ms"]),
            "added_vs_bare_p50_ms": round(p50 - stats[bare]["p50_ms"], 3),
            "cpu_vs_bare": ratio(stats[v.name]["proxy_cpu_us"], stats[bare]["proxy_cpu_us"]),
            # Paired within each round (same minute, same machine state), then the median round:
            # the drift-free view of the same ratio.
            "vs_bare_p50_paired": round(
                percentile([a / b for a, b in zip(per_round[v.name], per_round[bare], strict=True)], 0.5), 3
            ),
        }
        row["met"] = row["vs_bare_p50"] <= 1.10 and row["vs_bare_p95"] <= 1.20
        rows.append(row)
    return {
        "rounds": rounds,
        "batch": batch,
        "variants": {name: {**stats[name], "listener": by_name[name].listener} for name in stats},
        "ratios": rows,
    }


# --- 2. streaming: per-event lag -------------------------------------------------------------------
async def one_stream(
    conn: Connection, model: str, events: int, gap_ms: float, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """A stamped stream: each text delta's lag (arrival minus the upstream's send time), in ms."""
    headers = {**HEADERS, "accept": "text/event-stream", "x-fake-events": str(events)}
    headers["x-fake-gap-ms"] = str(gap_ms)
    headers.update(extra or {})
    start = time.monotonic_ns()
    lags: list[float] = []
    first: float | None = None
    buffer = b""
    status = 0
    async for code, at, data in conn.stream("/v1/messages", body(model, stream=True), headers):
        status = code
        if not data:
            continue
        if first is None:
            first = (at - start) / 1e6
        buffer += data
        # Only whole lines: a stamp split across two chunks is read when its second half arrives.
        complete, _, buffer = buffer.rpartition(b"\n")
        lags += [(at - int(m.group(1))) / 1e6 for m in _STAMP.finditer(complete)]
    return {
        "status": status,
        "lags": lags,
        "first_ms": first,
        "duration_ms": (time.monotonic_ns() - start) / 1e6,
    }


async def streaming(variants: list[Variant], rounds: int, events: int, gap_ms: float) -> dict[str, Any]:
    conns = {v.name: Connection(v.target) for v in variants}
    lags: dict[str, list[float]] = {v.name: [] for v in variants}
    firsts: dict[str, list[float]] = {v.name: [] for v in variants}
    short: dict[str, int] = {v.name: 0 for v in variants}
    for v in variants:  # warm-up: connections open, TLS done
        await one_stream(conns[v.name], v.model, 3, 0)
    for round_no in range(rounds):
        for v in rotated(variants, round_no):
            result = await one_stream(conns[v.name], v.model, events, gap_ms)
            assert result["status"] == 200, (v.name, result["status"])
            lags[v.name] += result["lags"]
            firsts[v.name].append(result["first_ms"])
            short[v.name] += events - len(result["lags"])
    for conn in conns.values():
        await conn.close()
    out: dict[str, Any] = {}
    direct = next(v.name for v in variants if v.proxy == "direct")
    direct_p95 = percentile(lags[direct], 0.95)
    for v in variants:
        values = lags[v.name]
        out[v.name] = {
            "events": len(values),
            "missing_events": short[v.name],
            "lag_p50_ms": round(percentile(values, 0.5), 3),
            "lag_p95_ms": round(percentile(values, 0.95), 3),
            "lag_max_ms": round(max(values), 3),
            # An event that arrived later than the next one was sent was held back by someone.
            "held_back": sum(1 for lag in values if lag >= gap_ms),
            "first_event_p50_ms": round(percentile(firsts[v.name], 0.5), 3),
            "p95_minus_direct_ms": round(percentile(values, 0.95) - direct_p95, 3),
        }
        out[v.name]["met"] = (
            v.proxy == "direct"
            or (out[v.name]["p95_minus_direct_ms"] <= 5.0 and out[v.name]["held_back"] == 0)
        ) and out[v.name]["missing_events"] == 0
    return {"rounds": rounds, "events_per_stream": events, "gap_ms": gap_ms, "variants": out}


# --- 3. throughput and scale -----------------------------------------------------------------------
async def _burst(variant: Variant, clients: int, per_client: int, models: tuple[str, ...]) -> dict[str, Any]:
    """``clients`` keep-alive clients, each making ``per_client`` calls; every 4th call streamed."""
    latencies: list[float] = []
    errors = 0

    async def worker(index: int) -> None:
        nonlocal errors
        conn = Connection(variant.target)
        for call in range(per_client):
            model = models[(index + call) % len(models)]
            stream = (index + call) % 4 == 0
            start = time.perf_counter_ns()
            try:
                if stream:
                    status, data = await conn.post("/v1/messages", body(model, True), HEADERS)
                    ok = status == 200 and b"message_stop" in data
                else:
                    ok = await _call(conn, model) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
            latencies.append((time.perf_counter_ns() - start) / 1e6)
            errors += not ok
        await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


async def throughput(variants: list[Variant], rounds: int, clients: int, per_client: int) -> dict[str, Any]:
    totals: dict[str, dict[str, Any]] = {
        v.name: {"latencies": [], "errors": 0, "elapsed": 0.0, "cpu_ns": 0} for v in variants
    }
    for round_no in range(rounds):
        for v in rotated(variants, round_no):
            models = (HAIKU, SONNET) if v.proxy == "ccmitmd" else (v.model,)
            cpu_start = cpu_ns(v.pid)
            result = await _burst(v, clients, per_client, models)
            total = totals[v.name]
            total["cpu_ns"] += cpu_ns(v.pid) - cpu_start
            total["latencies"] += result["latencies"]
            total["errors"] += result["errors"]
            total["elapsed"] += result["elapsed"]
    out: dict[str, Any] = {}
    for v in variants:
        total = totals[v.name]
        requests = len(total["latencies"])
        out[v.name] = {
            "listener": v.listener,
            "requests": requests,
            "errors": total["errors"],
            "rps": round(requests / total["elapsed"], 1),
            "proxy_cpu_us": round(total["cpu_ns"] / requests / 1000, 1) if requests and v.pid else None,
            **summary(total["latencies"]),
        }
    rows = []
    for v in variants:
        if v.proxy == "ccmitmd":
            bare = next(b.name for b in variants if b.proxy == "bare" and b.listener == v.listener)
            share = ratio(out[v.name]["rps"], out[bare]["rps"])
            rows.append(
                {
                    "listener": v.listener,
                    "ccmitmd_vs_bare_rps": share,
                    # Steadier than requests/s on a shared machine: the proxy's own CPU per request.
                    "ccmitmd_vs_bare_cpu": ratio(out[v.name]["proxy_cpu_us"], out[bare]["proxy_cpu_us"]),
                    "errors": out[v.name]["errors"],
                    "met": share >= 0.90 and out[v.name]["errors"] == 0,
                }
            )
    return {
        "rounds": rounds,
        "clients": clients,
        "streamed_share": 0.25,
        "variants": out,
        "ratios": rows,
    }


async def scale(
    variants: list[Variant],
    levels: tuple[int, ...],
    streams_total: int,
    events: int,
    gap_ms: float,
    rounds: int,
) -> dict[str, Any]:
    """How stream latency grows with concurrency: ``c`` concurrent stamped streams at a time."""
    results: dict[str, dict[int, dict[str, list[float]]]] = {
        v.name: {c: {"duration": [], "lags": []} for c in levels} for v in variants
    }
    errors = 0
    for round_no in range(rounds):
        for c in levels:
            for v in rotated(variants, round_no):
                per_client = max(1, streams_total // c // rounds)

                async def worker(v: Variant = v, per_client: int = per_client, c: int = c) -> None:
                    nonlocal errors
                    conn = Connection(v.target)
                    for _ in range(per_client):
                        result = await one_stream(conn, v.model, events, gap_ms)
                        errors += result["status"] != 200 or len(result["lags"]) != events
                        results[v.name][c]["duration"].append(result["duration_ms"])
                        results[v.name][c]["lags"] += result["lags"]
                    await conn.close()

                await asyncio.gather(*(worker() for _ in range(c)))
    out: dict[str, Any] = {}
    for v in variants:
        out[v.name] = {
            str(c): {
                "streams": len(results[v.name][c]["duration"]),
                "duration_p50_ms": round(percentile(results[v.name][c]["duration"], 0.5), 2),
                "duration_p95_ms": round(percentile(results[v.name][c]["duration"], 0.95), 2),
                "lag_p50_ms": round(percentile(results[v.name][c]["lags"], 0.5), 3),
                "lag_p95_ms": round(percentile(results[v.name][c]["lags"], 0.95), 3),
            }
            for c in levels
        }
    return {
        "levels": list(levels),
        "events_per_stream": events,
        "gap_ms": gap_ms,
        "errors": errors,
        "variants": out,
    }


# --- 4. memory ---------------------------------------------------------------------------------------
async def soak(variant_a: Variant, variant_b: Variant, pid: int, total: int, clients: int) -> dict[str, Any]:
    """RSS before and after ``total`` mixed calls through ccmitmd (both listeners, half each)."""
    before = rss_kib(pid)
    checkpoints = [{"requests": 0, "rss_kib": before}]
    done = 0
    errors = 0
    steps = 5
    per_step = max(1, total // steps)
    for step in range(steps):
        variant = variant_a if step % 2 == 0 else variant_b
        result = await _burst(variant, clients, max(1, per_step // clients), (HAIKU, SONNET))
        done += len(result["latencies"])
        errors += result["errors"]
        checkpoints.append({"requests": done, "rss_kib": rss_kib(pid)})
    after = checkpoints[-1]["rss_kib"]
    growth_per_1000 = (after - before) / done * 1000 / 1024 if done else float("nan")
    return {
        "requests": done,
        "errors": errors,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "growth_mib_per_1000": round(growth_per_1000, 3),
        "growth_mib_per_10000": round(growth_per_1000 * 10, 2),
        "met": growth_per_1000 * 10 < 20,
        "checkpoints": checkpoints,
    }


async def open_streams(variant: Variant, pid: int, count: int, release: Any) -> dict[str, Any]:
    """RSS with ``count`` streams held open at once (the upstream holds them after a few events)."""
    idle = rss_kib(pid)
    started = asyncio.Event()
    opened = 0
    complete = 0

    async def hold() -> None:
        nonlocal opened, complete
        conn = Connection(variant.target)
        headers = {**HEADERS, "accept": "text/event-stream", "x-fake-behaviour": "gated"}
        seen = b""
        counted = False
        try:
            async for _status, _at, data in conn.stream("/v1/messages", body(variant.model, True), headers):
                seen += data
                if not counted and b"message_start" in seen:
                    counted = True
                    opened += 1
                    if opened == count:
                        started.set()
            complete += b"message_stop" in seen
        finally:
            await conn.close()

    tasks = [asyncio.create_task(hold()) for _ in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(started.wait(), 60)
    await asyncio.sleep(0.2)  # let the proxy settle with all of them open
    held = rss_kib(pid)
    release()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    await asyncio.sleep(0.2)
    after = rss_kib(pid)
    return {
        "streams": count,
        "opened": opened,
        "completed": complete,
        "rss_idle_mib": round(idle / 1024, 1),
        "rss_open_mib": round(held / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "per_stream_kib": round((held - idle) / count, 1),
    }


# --- 5. a config reload storm under load -------------------------------------------------------------
async def reload_storm(
    variant: Variant, rounds: int, phase_s: float, touch: Any, reloads_seen: Any, interval_s: float
) -> dict[str, Any]:
    """Sequential calls with and without config.yaml being rewritten every ``interval_s``."""
    conn = Connection(variant.target)
    samples: dict[str, list[float]] = {"quiet": [], "storm": []}
    reloads_before = reloads_seen()
    touches = 0
    for round_no in range(rounds):
        for phase in rotated(["quiet", "storm"], round_no):
            deadline = time.perf_counter() + phase_s
            next_touch = time.perf_counter()
            while time.perf_counter() < deadline:
                if phase == "storm" and time.perf_counter() >= next_touch:
                    touch()
                    touches += 1
                    next_touch += interval_s
                start = time.perf_counter_ns()
                assert await _call(conn, variant.model) == 200
                samples[phase].append((time.perf_counter_ns() - start) / 1e6)
    await conn.close()
    await asyncio.sleep(0.6)  # the last debounced reload
    quiet, storm = summary(samples["quiet"]), summary(samples["storm"])
    return {
        "touches": touches,
        "reloads": reloads_seen() - reloads_before,
        "interval_s": interval_s,
        "quiet": quiet,
        "storm": storm,
        "storm_vs_quiet_p50": ratio(storm["p50_ms"], quiet["p50_ms"]),
        "storm_vs_quiet_p95": ratio(storm["p95_ms"], quiet["p95_ms"]),
    }
