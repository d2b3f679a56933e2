"""`make bench`: what ccmitm costs, side by side with a bare mitmproxy and a direct call.

Not a test: it measures and writes docs/PERFORMANCE.md and docs/performance.json. Everything runs
on loopback: the fake upstreams live in this process (so stream stamps and arrivals share one
clock), ccmitmd and the bare mitmproxy baseline (bare_mitmproxy.py) are subprocesses built from the
same config file. Sections: 1 per-request overhead, 2 per-event streaming lag, 3 throughput and
scale, 4 memory, 5 the daemon's own work (addon, SSE tap, usage writer, a reload storm), and the
restart after kill -9.

Knobs (environment): BENCH_SMOKE=1 (a few samples of everything, for the smoke test),
BENCH_ROUNDS, BENCH_BATCH, BENCH_SOAK, BENCH_OUT (output directory, default docs/).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import cli_startup  # noqa: E402
import inproc  # noqa: E402
import mitmproxy.version  # noqa: E402
import peer_ccr  # noqa: E402
import render  # noqa: E402
import sections  # noqa: E402
import yaml  # noqa: E402
from rawhttp import Connection, Target  # noqa: E402
from sections import HAIKU, SONNET, Variant  # noqa: E402
from stats import percentile  # noqa: E402

from ccmitm.testing.fakeupstream import FakeUpstream  # noqa: E402
from ccmitm.testing.ports import free_port, wait_port  # noqa: E402
from tests.helpers import ZAI_KEY, Daemon, base_config  # noqa: E402

SMOKE = os.environ.get("BENCH_SMOKE") == "1"
PEER = f"claude-code-router {peer_ccr.VERSION} reverse"
# A subset for before/after comparisons while working on the hot path (then no Markdown is written).
ALL_SECTIONS = ("latency", "streaming", "throughput", "scale", "memory", "own_work", "restart", "cli")
SECTIONS = tuple(os.environ.get("BENCH_SECTIONS", ",".join(ALL_SECTIONS)).split(","))


def knob(name: str, full: int, smoke: int) -> int:
    return int(os.environ.get(name, smoke if SMOKE else full))


ROUNDS = knob("BENCH_ROUNDS", 24, 1)
BATCH = knob("BENCH_BATCH", 20, 5)
STREAM_ROUNDS = knob("BENCH_STREAM_ROUNDS", 8, 1)
STREAM_EVENTS = 40
GAP_MS = 5.0
TP_ROUNDS = knob("BENCH_TP_ROUNDS", 8, 1)  # more, shorter rounds: drift lands on every variant
TP_CLIENTS = 24
TP_PER_CLIENT = knob("BENCH_TP_PER_CLIENT", 9, 2)
SCALE_STREAMS = knob("BENCH_SCALE_STREAMS", 64, 32)
SOAK = knob("BENCH_SOAK", 10000, 200)
OPEN_STREAMS = knob("BENCH_OPEN_STREAMS", 100, 10)
RELOAD_ROUNDS = knob("BENCH_RELOAD_ROUNDS", 3, 1)
RELOAD_PHASE_S = 2.0 if not SMOKE else 0.5


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu_model": model,
        "python": platform.python_version(),
        "mitmproxy": mitmproxy.version.VERSION,
        "platform": platform.platform(),
        "loadavg_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "smoke": SMOKE,
    }


class Bench:
    """The processes under test and the ways to reach them."""

    def __init__(self, root: Path):
        self.root = root
        self.anthropic = FakeUpstream("anthropic").start()
        self.zai = FakeUpstream("zai").start()
        config = base_config(root, self.anthropic, self.zai)
        self.daemon = Daemon(root / "ccmitmd", config, env={})
        bare_config = copy.deepcopy(config)
        bare_config["proxy"].update(port=free_port(), reverse_port=free_port())
        self.bare_config_path = root / "bare.yaml"
        self.bare_config_path.write_text(yaml.safe_dump(bare_config, sort_keys=False))
        self.bare_config = bare_config
        self.bare: subprocess.Popen[bytes] | None = None
        # The Node peer, when npm can install it: a pass-through to the same fake upstream.
        self.peer_skipped = peer_ccr.install()
        self.peer = None if self.peer_skipped else peer_ccr.ClaudeCodeRouter(root, self.anthropic.url, HAIKU)

    def start(self) -> None:
        self.daemon.start()  # first: it creates the CA both share (same confdir)
        self.bare = subprocess.Popen(
            [sys.executable, str(HERE / "bare_mitmproxy.py"), str(self.bare_config_path), self.anthropic.url],
            env={**self.daemon.env(), "ZAI_API_KEY": ZAI_KEY},
            stdout=subprocess.PIPE,
            stderr=open(self.root / "bare.stderr", "wb"),  # noqa: SIM115 - owned by the process
        )
        assert self.bare.stdout is not None
        if self.bare.stdout.readline().strip() != b"ready":
            raise RuntimeError((self.root / "bare.stderr").read_text())
        wait_port(self.bare_config["proxy"]["reverse_port"])
        if self.peer is not None:
            self.peer.start()

    def stop(self) -> None:
        if self.peer is not None:
            self.peer.stop()
        if self.bare is not None and self.bare.poll() is None:
            self.bare.send_signal(signal.SIGTERM)
            try:
                self.bare.wait(20)
            except subprocess.TimeoutExpired:
                self.bare.kill()
        self.daemon.stop()
        self.anthropic.stop()
        self.zai.stop()

    def forget(self) -> None:
        """The fakes record every request; a long run does not need them."""
        self.anthropic.received.clear()
        self.zai.received.clear()

    def variants(self) -> dict[str, Variant]:
        tls = ssl.create_default_context(cafile=str(self.daemon.ca_cert))
        d_port, d_rev = self.daemon.port, self.daemon.reverse_port
        dpid, bpid = self.daemon.proc.pid, self.bare.pid  # type: ignore[union-attr]
        b_port, b_rev = self.bare_config["proxy"]["port"], self.bare_config["proxy"]["reverse_port"]

        def intercept(port: int, credentials: dict[str, str] | None = None) -> Target:
            connect = tuple((credentials or {}).items())
            return Target(
                "api.anthropic.com", 443, proxy=("127.0.0.1", port), tls=tls, connect_headers=connect
            )

        def ccmitmd_reverse() -> Target:  # as a wired client: with the client token
            return Target("127.0.0.1", d_rev, headers=tuple(self.daemon.auth_headers.items()))

        proxy_auth = self.daemon.proxy_auth_headers

        found = [
            Variant("direct", Target("127.0.0.1", self.anthropic.port), HAIKU, "direct", "direct"),
            Variant("bare reverse", Target("127.0.0.1", b_rev), HAIKU, "bare", "reverse", bpid),
            Variant("bare intercept (TLS)", intercept(b_port), HAIKU, "bare", "intercept", bpid),
            Variant("ccmitmd reverse, Haiku", ccmitmd_reverse(), HAIKU, "ccmitmd", "reverse", dpid),
            Variant("ccmitmd reverse, Sonnet", ccmitmd_reverse(), SONNET, "ccmitmd", "reverse", dpid),
            Variant(
                "ccmitmd intercept, Haiku", intercept(d_port, proxy_auth), HAIKU, "ccmitmd", "intercept", dpid
            ),
            Variant(
                "ccmitmd intercept, Sonnet",
                intercept(d_port, proxy_auth),
                SONNET,
                "ccmitmd",
                "intercept",
                dpid,
            ),
        ]
        if self.peer is not None:
            found.append(
                Variant(PEER, Target("127.0.0.1", self.peer.port), HAIKU, "peer", "reverse", self.peer.pid)
            )
        return {v.name: v for v in found}

    def touch_config(self) -> None:
        # A real edit each time (a changing comment), written in place like an editor's save.
        text = yaml.safe_dump(self.daemon.config, sort_keys=False)
        self.daemon.config_path.write_text(f"# bench {time.monotonic_ns()}\n{text}")

    def reloads_seen(self) -> int:
        return self.daemon.stderr().count("config reloaded")


async def restart_after_kill(bench: Bench) -> dict[str, Any]:
    assert bench.daemon.proc is not None
    bench.daemon.proc.send_signal(signal.SIGKILL)
    bench.daemon.proc.wait()
    start = time.perf_counter()
    bench.daemon.start(wait=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = Connection(
            Target("127.0.0.1", bench.daemon.reverse_port, headers=tuple(bench.daemon.auth_headers.items()))
        )
        try:
            status, _ = await conn.post("/v1/messages", sections.body(HAIKU), sections.HEADERS)
            if status == 200:
                break
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.02)
        finally:
            await conn.close()
    first = (time.perf_counter() - start) * 1000
    bench.daemon.wait_ready()
    return {"first_call_ms": round(first)}


def start_to_ready(bench: Bench, runs: int) -> dict[str, Any]:
    """From exec of ccmitmd to its sd_notify READY=1 (listeners bound, control socket open).

    The bench owns the notify socket, as systemd would, so the stamp is the daemon's own word,
    not a poll of its log. Graceful stop between runs; the CA already exists (a normal start)."""
    samples = []
    address = str(bench.root / "notify.sock")
    for _ in range(runs):
        bench.daemon.stop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
            notify.bind(address)
            notify.settimeout(30)
            bench.daemon.extra_env["NOTIFY_SOCKET"] = address
            start = time.perf_counter()
            bench.daemon.start(wait=False)
            while b"READY=1" not in notify.recv(4096):
                pass
            samples.append((time.perf_counter() - start) * 1000)
        bench.daemon.extra_env.pop("NOTIFY_SOCKET")
        bench.daemon.wait_ready()
    return {
        "runs": runs,
        "p50_ms": round(percentile(samples, 0.5)),
        "max_ms": round(max(samples)),
        "target_ms": 700,
    }


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run(bench: Bench) -> dict[str, Any]:
    v = bench.variants()
    pick = lambda *names: [v[n] for n in names if n in v]  # noqa: E731 - the peer may be skipped
    daemon_pid = bench.daemon.proc.pid  # type: ignore[union-attr]
    bare_pid = bench.bare.pid  # type: ignore[union-attr]
    results: dict[str, Any] = {}

    progress("1/5 per-request overhead")
    if "latency" in SECTIONS:
        results["latency"] = await sections.latency(list(v.values()), ROUNDS, BATCH, warmup=BATCH)
        bench.forget()
    warm = {
        "ccmitmd": round(sections.rss_kib(daemon_pid) / 1024, 1),
        "bare": round(sections.rss_kib(bare_pid) / 1024, 1),
    }
    if bench.peer is not None:
        warm["peer"] = round(sections.rss_kib(bench.peer.pid) / 1024, 1)
    results["peer"] = peer_summary(bench, results, warm)

    progress("2/5 streaming lag")
    if "streaming" in SECTIONS:
        results["streaming"] = await sections.streaming(
            pick(
                "direct",
                "bare reverse",
                "ccmitmd reverse, Haiku",
                "ccmitmd reverse, Sonnet",
                "ccmitmd intercept, Haiku",
                PEER,
            ),
            STREAM_ROUNDS,
            STREAM_EVENTS,
            GAP_MS,
        )
    bench.forget()

    progress("3/5 throughput and scale")
    if "throughput" in SECTIONS:
        results["throughput"] = await sections.throughput(
            pick(
                "bare reverse",
                "ccmitmd reverse, Haiku",
                "bare intercept (TLS)",
                "ccmitmd intercept, Haiku",
                PEER,
            ),
            TP_ROUNDS,
            TP_CLIENTS,
            TP_PER_CLIENT,
        )
    bench.forget()
    if "scale" in SECTIONS:
        results["scale"] = await sections.scale(
            pick("direct", "bare reverse", "ccmitmd reverse, Haiku"),
            (1, 8, 32),
            SCALE_STREAMS,
            20,
            2.0,
            2 if not SMOKE else 1,
        )
    bench.forget()

    if "memory" in SECTIONS:
        progress("4/5 memory")
        results["memory"] = await memory(bench, v, daemon_pid, bare_pid, warm)
    if "own_work" in SECTIONS:
        progress("5/5 the daemon's own work")
        results["own_work"] = await own_work(bench, v)
    if "restart" in SECTIONS:
        progress("restart after kill -9")
        results["restart"] = await restart_after_kill(bench)
        results["restart"]["start_to_ready"] = start_to_ready(bench, 2 if SMOKE else 7)
    if "cli" in SECTIONS:
        progress("ccctl start-up: each command vs a bare python")
        ccctl = str(Path(sys.executable).parent / "ccctl")
        results["cli"] = cli_startup.cli_startup(
            bench.daemon.env(), ccctl, 1 if SMOKE else 15, warm_up=not SMOKE
        )
    return results


def peer_summary(bench: Bench, results: dict[str, Any], warm: dict[str, float]) -> dict[str, Any]:
    """ccmitmd against claude-code-router 2.0.0 (same rounds) and against a direct call."""
    summary: dict[str, Any] = {"name": PEER, "skipped": bench.peer_skipped}
    variants = results.get("latency", {}).get("variants", {})
    if not variants:
        return summary
    direct = variants["direct"]["p50_ms"]
    intercept = variants["ccmitmd intercept, Haiku"]["p50_ms"]
    summary["intercept_vs_direct_p50"] = sections.ratio(intercept, direct)
    summary["intercept_target"] = 3.0
    if PEER in variants:
        reverse, peer = variants["ccmitmd reverse, Haiku"], variants[PEER]
        summary["reverse_vs_peer_p50"] = sections.ratio(reverse["p50_ms"], peer["p50_ms"])
        summary["reverse_vs_peer_p95"] = sections.ratio(reverse["p95_ms"], peer["p95_ms"])
        summary["reverse_target"] = 0.95
        summary["rss_mib"] = {"ccmitmd": warm["ccmitmd"], "peer": warm.get("peer")}
    return summary


async def memory(
    bench: Bench, v: dict[str, Variant], daemon_pid: int, bare_pid: int, warm: dict[str, float]
) -> dict[str, Any]:
    soak = await sections.soak(
        v["ccmitmd reverse, Haiku"], v["ccmitmd intercept, Haiku"], daemon_pid, SOAK, TP_CLIENTS
    )
    bench.forget()

    def release() -> None:
        bench.zai.release()
        bench.anthropic.release()

    open_streams = {}
    for who, variant, pid in (
        ("ccmitmd", v["ccmitmd reverse, Haiku"], daemon_pid),
        ("bare", v["bare reverse"], bare_pid),
    ):
        open_streams[who] = await sections.open_streams(variant, pid, OPEN_STREAMS, release)
        bench.zai.reset()
        bench.anthropic.reset()
    return {"warm_mib": warm, "soak": soak, "open_streams": open_streams}


async def own_work(bench: Bench, v: dict[str, Variant]) -> dict[str, Any]:
    return {
        "addon": inproc.addon_per_call(
            bench.daemon.config_path, 300 if SMOKE else 3000, {"ZAI_API_KEY": ZAI_KEY}
        ),
        "tap": inproc.tap(2000, 2 if SMOKE else 10),
        "usage_writer": inproc.usage_writer(2000 if SMOKE else 20000),
        "reload": await sections.reload_storm(
            v["ccmitmd reverse, Haiku"],
            RELOAD_ROUNDS,
            RELOAD_PHASE_S,
            bench.touch_config,
            bench.reloads_seen,
            0.4,
        ),
    }


def main() -> None:
    out_dir = Path(os.environ.get("BENCH_OUT", ROOT / "docs"))
    out_dir.mkdir(parents=True, exist_ok=True)
    # The fakes and the client share this process: hand the GIL over quickly, so an upstream
    # thread is not kept waiting 5 ms behind the client loop (that would be the bench's lag).
    sys.setswitchinterval(0.0002)
    started = time.perf_counter()
    info = machine()
    root = Path(tempfile.mkdtemp(prefix="ccmitm-bench-"))
    bench = Bench(root)
    try:
        bench.start()
        results = asyncio.run(run(bench))
    finally:
        bench.stop()
        shutil.rmtree(root, ignore_errors=True)
    info["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    info["elapsed_s"] = round(time.perf_counter() - started)
    results = {"machine": info, **results}
    if SECTIONS != ALL_SECTIONS:
        partial = out_dir / "performance-partial.json"
        partial.write_text(json.dumps(results, indent=2) + "\n")
        progress(f"partial run ({', '.join(SECTIONS)}): wrote {partial} only")
        return
    (out_dir / "performance.json").write_text(json.dumps(results, indent=2) + "\n")
    doc = out_dir / "PERFORMANCE.md"
    existing = doc.read_text() if doc.exists() else None
    doc.write_text(render.render(results, existing))
    progress(f"wrote {doc} and {out_dir / 'performance.json'} in {info['elapsed_s']} s")


if __name__ == "__main__":
    main()
