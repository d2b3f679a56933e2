"""`make bench`: what ccmitm costs per call, and how fast it comes back. Not a test: it prints.

Everything runs on loopback against the fake upstreams of the test suite, with the real daemon:

- per-call latency (p50/p95) of a small non-streamed call: direct to the fake upstream, through
  the reverse listener (plain HTTP), through the intercepting listener (TLS with ccmitm's CA);
- time to first event of a stream, direct vs through ccmitm;
- throughput with concurrent clients through the reverse listener;
- restart after kill -9: how long until the restarted daemon serves a call.
"""

from __future__ import annotations

import os
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ccmitm.fakeupstream import FakeUpstream  # noqa: E402

from conftest import CLIENT_API_KEY, Daemon, base_config  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "300"))
BODY = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latencies(client: httpx.Client, url: str, calls: int, body: dict) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        response = client.post(url, json=body, headers={"x-api-key": CLIENT_API_KEY})
        response.read()
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.status_code
    return samples[calls // 10 :]  # drop warm-up


def first_event_ms(client: httpx.Client, url: str, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        with client.stream(
            "POST", url, json={**BODY, "stream": True}, headers={"x-api-key": CLIENT_API_KEY}
        ) as r:
            first = True
            for _line in r.iter_lines():  # read it all, so the connection is reused
                if first:
                    samples.append((time.perf_counter() - start) * 1000)
                    first = False
    return samples[calls // 10 :]


def throughput(url: str, clients: int, seconds: float) -> float:
    done = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal done
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < deadline:
                client.post(url, json=BODY, headers={"x-api-key": CLIENT_API_KEY}).read()
                with lock:
                    done += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done / seconds


def row(name: str, samples: list[float]) -> str:
    return f"  {name:<42} p50 {statistics.median(samples):7.2f} ms   p95 {percentile(samples, 0.95):7.2f} ms"


def main() -> None:
    anthropic = FakeUpstream("anthropic").start()
    zai = FakeUpstream("zai").start()
    root = Path(tempfile.mkdtemp(prefix="ccmitm-bench-"))
    daemon = Daemon(root, base_config(root, anthropic, zai), env={})
    daemon.start()
    try:
        ca = ssl.create_default_context(cafile=str(daemon.ca_cert))
        print(f"ccmitm bench: {CALLS} calls per row, loopback, fake upstreams\n")
        print("non-streamed call (Haiku -> offload lane, model rewritten, usage logged):")
        with httpx.Client() as direct:
            print(
                row("direct to the fake upstream", latencies(direct, zai.url + "/v1/messages", CALLS, BODY))
            )
        with httpx.Client() as reverse:
            print(
                row(
                    "through the reverse listener",
                    latencies(reverse, daemon.reverse_url + "/v1/messages", CALLS, BODY),
                )
            )
        with httpx.Client(proxy=daemon.proxy_url, verify=ca) as intercept:
            print(
                row(
                    "through the intercepting listener (TLS)",
                    latencies(intercept, "https://api.anthropic.com/v1/messages", CALLS, BODY),
                )
            )
        print("\nstreamed call, time to the first SSE line:")
        with httpx.Client() as direct:
            print(row("direct", first_event_ms(direct, zai.url + "/v1/messages", CALLS // 2)))
        with httpx.Client() as reverse:
            print(
                row(
                    "through the reverse listener",
                    first_event_ms(reverse, daemon.reverse_url + "/v1/messages", CALLS // 2),
                )
            )
        print("\nthroughput, reverse listener, non-streamed:")
        for clients in (1, 10):
            rate = throughput(daemon.reverse_url + "/v1/messages", clients, 5.0)
            print(f"  {clients:>2} concurrent client(s): {rate:7.0f} calls/s")
        print("\nrestart after kill -9:")
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        start = time.perf_counter()
        daemon.start(wait=False)
        while True:
            try:
                if httpx.post(daemon.reverse_url + "/v1/messages", json=BODY, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.02)
        print(
            f"  first call served {(time.perf_counter() - start) * 1000:.0f} ms after the new process started"
        )
    finally:
        daemon.stop()
        anthropic.stop()
        zai.stop()


if __name__ == "__main__":
    main()
