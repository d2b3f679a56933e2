"""``ccctl endurance``: the endurance plan as a command that leaves its evidence behind.

Phases: warm-up (status + baseline summarize), soak (alternating Sonnet/Haiku streaming calls for
N minutes), parallel, burst, optional chaos (SIGTERM drain and SIGKILL mid-stream, restart, no
socket left open), then `ccctl verify` over the usage log. The folder gets METRICS.json,
SUMMARY.md, TESTS.md and VERIFY.txt, each scanned for secrets before the run reports success.

``--against fake`` (the default) starts fake upstreams and a private ccmitmd on free loopback
ports in a temp dir (:mod:`ccmitm.endurance.fake`), with generated credentials; it never touches
the user's daemon or config. ``--against live`` sends small real requests through the user's
running daemon with the user's own client credential, and needs an explicit ``--yes``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccmitm import paths
from ccmitm.config.clienttoken import HEADER, USER, read_token, token_path
from ccmitm.config.model import Config
from ccmitm.control.client import status as read_status
from ccmitm.control.protocol import ControlError
from ccmitm.core.redact import redact_text
from ccmitm.endurance.calls import CALL_TIMEOUT_S, CallResult, Target, run_concurrent, stream_call
from ccmitm.endurance.evidence import (
    CheckResult,
    RunResult,
    client_stats,
    log_stats,
    render_summary,
    render_tests,
    write_evidence,
)
from ccmitm.endurance.fake import FakeWorld, fake_checks
from ccmitm.reports.audit import verify
from ccmitm.reports.bundle_state import ENDURANCE_POINTER
from ccmitm.reports.records import UsageLines, since_filter
from ccmitm.reports.summary import summarize
from ccmitm.reports.text import format_verify

PREFIX = "ccmitm-endurance-"
#: A pause between soak calls: a steady conversation-like rate, not a benchmark (that is `make bench`).
SOAK_PAUSE_S = {"fake": 0.1, "live": 2.0}
#: Live runs spend the user's tokens: parallel and burst are capped hard.
LIVE_CAP = 4
#: How long a killed daemon's client may take to see an error before it counts as a hang.
HANG_LIMIT_S = 10.0

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    minutes: float
    against: str = "fake"
    chaos: bool = False
    parallel: int = 12
    burst: int = 40


def check_plan(plan: Plan, yes: bool, environ: Mapping[str, str]) -> str | None:
    """Why the plan cannot run (a usage error), or None."""
    if plan.minutes <= 0:
        return "--minutes must be positive"
    if plan.against == "live":
        if not yes:
            return "--against live sends real requests with your credentials and spends tokens: add --yes"
        if plan.chaos:
            return "--chaos restarts a daemon: only with --against fake (it never touches yours)"
        if not (environ.get("ANTHROPIC_API_KEY") or environ.get("ANTHROPIC_AUTH_TOKEN")):
            return "--against live needs ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN in the environment"
    return None


def default_out_dir(now: datetime | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    stamp = (now or datetime.now(UTC)).astimezone().strftime("%Y%m%d-%H%M%S")
    return paths.state_home(environ) / "endurance" / f"{PREFIX}{stamp}"


class _Phases:
    """Runs the phases against a target, keeping every call and each phase's time window."""

    def __init__(self, target: Target, echo: Echo):
        self.target = target
        self.echo = echo
        self.calls: list[CallResult] = []
        self.windows: dict[str, tuple[datetime, datetime]] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = datetime.now(UTC)
        self.echo(f"phase {name} ...")
        yield
        self.windows[name] = (start, datetime.now(UTC))

    def soak(self, minutes: float, pause: float) -> None:
        deadline = time.monotonic() + minutes * 60
        index = 0
        with self.phase("soak"), self.target.client(1) as client:
            while time.monotonic() < deadline:
                family = "sonnet" if index % 2 == 0 else "haiku"
                self.calls.append(stream_call(client, self.target, family, "soak"))
                index += 1
                time.sleep(pause)

    def concurrent(self, name: str, count: int, workers: int) -> None:
        with self.phase(name):
            self.calls += run_concurrent(self.target, name, count, workers)


def _chaos(world: FakeWorld, phases: _Phases, checks: list[CheckResult]) -> None:
    """SIGTERM drains a stream; SIGKILL mid-stream errors promptly; restarts serve; no socket stuck."""
    target = world.target()

    def gated_stream() -> tuple[threading.Thread, list[CallResult]]:
        box: list[CallResult] = []
        world.anthropic.reset()
        world.anthropic.behaviour = "gated"
        client = target.client(1)

        def run() -> None:
            try:
                box.append(stream_call(client, target, "sonnet", "chaos"))
            finally:
                client.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not world.anthropic.messages() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the first events are on their way to the client
        return thread, box

    with phases.phase("chaos"):
        # 1. SIGTERM with a stream in flight: the daemon drains it, then exits cleanly.
        thread, box = gated_stream()
        world.daemon.signal(signal.SIGTERM)
        time.sleep(0.5)
        world.anthropic.release()
        thread.join(CALL_TIMEOUT_S)
        code = world.daemon.wait_exit(30)
        drained = bool(box) and box[0].ok
        checks.append(
            CheckResult(
                "chaos: SIGTERM drains the in-flight stream",
                drained and code == 0,
                f"stream complete: {drained}; daemon exit code {code}",
            )
        )
        phases.calls += box
        world.anthropic.behaviour = "ok"

        # 2. SIGKILL mid-stream: the client gets an error promptly, never a hang.
        world.start()
        thread, box = gated_stream()
        killed_at = time.monotonic()
        world.daemon.signal(signal.SIGKILL)
        thread.join(HANG_LIMIT_S)
        waited = time.monotonic() - killed_at
        world.anthropic.release()
        world.daemon.wait_exit(10)
        prompt_error = bool(box) and not box[0].ok
        checks.append(
            CheckResult(
                "chaos: SIGKILL mid-stream gives the client an error, not a hang",
                prompt_error,
                f"client ended {'with ' + str(box[0].error) if box else 'NOT within the limit'} "
                f"after {waited:.1f}s (limit {HANG_LIMIT_S:g}s)",
            )
        )
        thread.join(CALL_TIMEOUT_S)
        for result in box:  # the one call that is meant to fail, reported apart
            result.phase = "chaos (killed)"
        phases.calls += box
        world.anthropic.behaviour = "ok"

        # 3. Restart: new calls succeed and the daemon's sockets settle back to its baseline.
        world.start()
        baseline = world.daemon.tcp_sockets()
        after = run_concurrent(target, "chaos", 10, 5)
        phases.calls += after
        checks.append(
            CheckResult(
                "chaos: calls succeed after the restart",
                all(c.ok for c in after),
                f"{sum(c.ok for c in after)}/{len(after)} ok",
            )
        )
        settled = world.daemon.tcp_sockets()
        deadline = time.monotonic() + 15
        while (
            baseline is not None
            and settled is not None
            and settled > baseline
            and time.monotonic() < deadline
        ):
            time.sleep(0.25)
            settled = world.daemon.tcp_sockets()
        if baseline is None:
            checks.append(CheckResult("chaos: no connection left open", None, "no /proc on this system"))
        else:
            checks.append(
                CheckResult(
                    "chaos: no connection left open",
                    settled is not None and settled <= baseline,
                    f"daemon TCP sockets: {baseline} before, {settled} after settling",
                )
            )


def _live_target(config: Config) -> Target:
    environ = os.environ
    headers = {"anthropic-version": "2023-06-01"}
    if environ.get("ANTHROPIC_API_KEY"):
        headers["x-api-key"] = environ["ANTHROPIC_API_KEY"]
    else:
        token = environ["ANTHROPIC_AUTH_TOKEN"]
        headers["authorization"] = f"Bearer {token}"
        if token.startswith("sk-ant-oat"):
            headers["anthropic-beta"] = "oauth-2025-04-20"
    host = config.proxy.host
    # The running daemon's client token, as a wired client shows it (proxy.client_auth).
    client_token = read_token(token_path()) if config.proxy.client_auth else None
    if config.proxy.reverse_port:
        if client_token:
            headers[HEADER] = client_token
        return Target(paths.http_url(host, config.proxy.reverse_port), headers)
    ca = Path(config.proxy.confdir) / "mitmproxy-ca-cert.pem"
    proxy = paths.http_url(host, config.proxy.port)
    if client_token:
        proxy = proxy.replace("http://", f"http://{USER}:{client_token}@", 1)
    return Target(
        "https://api.anthropic.com",
        headers,
        proxy=proxy,
        verify=ssl.create_default_context(cafile=str(ca)),
    )


def run(
    plan: Plan,
    folder: Path,
    config: Config | None = None,
    config_file: Path | None = None,
    echo: Echo = print,
) -> RunResult:
    """Run the plan and write the evidence into ``folder``. ``config`` is the user's (live only)."""
    started = datetime.now(UTC)
    checks: list[CheckResult] = []
    world: FakeWorld | None = None
    root: Path | None = None
    keys: dict[str, str] = {}
    warmup: dict[str, Any] = {}
    try:
        if plan.against == "fake":
            root = Path(tempfile.mkdtemp(prefix="ccmitm-endurance-"))
            world = FakeWorld(root)
            world.start()
            config, target, keys = world.config, world.target(), world.secrets
            parallel, burst, where = plan.parallel, plan.burst, "local fake upstreams, a private ccmitmd"
        else:
            assert config is not None
            target = _live_target(config)
            keys = {k: v for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN") if (v := os.environ.get(k))}
            parallel, burst = min(plan.parallel, LIVE_CAP), min(plan.burst, LIVE_CAP * 2)
            where = f"the running ccmitmd ({config_file}), real upstreams"
        phases = _Phases(target, echo)

        with phases.phase("warm-up"):
            try:
                status = read_status(config.socket_path())
                warmup["status"] = {
                    "version": status["version"],
                    "paused": status["paused"],
                    "lanes": {
                        n: {"available": lane["available"], "requests": lane["requests"]}
                        for n, lane in status["lanes"].items()
                    },
                }
                checks.append(
                    CheckResult("warm-up: the daemon answers status", True, f"ccmitmd {status['version']}")
                )
                checks.append(
                    CheckResult("warm-up: not paused", not status["paused"], status["paused_source"])
                )
            except ControlError as exc:
                checks.append(CheckResult("warm-up: the daemon answers status", False, redact_text(str(exc))))
            baseline = summarize(UsageLines(Path(config.logs.dir)), default_lane=config.routing.default_lane)
            warmup["baseline_summary"] = {
                "records": baseline["window"]["records"],
                "lanes": {
                    lane: {"calls": d["calls"], "errors": d["errors"]}
                    for lane, d in baseline["lanes"].items()
                },
            }
            with target.client(1) as client:
                phases.calls += [stream_call(client, target, f, "warm-up") for f in ("sonnet", "haiku")]

        phases.soak(plan.minutes, SOAK_PAUSE_S[plan.against])
        phases.concurrent("parallel", parallel * 3, parallel)
        phases.concurrent("burst", burst, burst)
        if plan.chaos and world is not None:
            _chaos(world, phases, checks)

        calls = phases.calls
        for phase in ("warm-up", "soak", "parallel", "burst"):
            mine = [c for c in calls if c.phase == phase]
            checks.append(
                CheckResult(
                    f"{phase}: every call completed its stream",
                    bool(mine) and all(c.ok for c in mine),
                    f"{sum(c.ok for c in mine)}/{len(mine)} ok",
                )
            )
        if world is not None:
            checks += fake_checks(world, calls)
            world.daemon.stop(timeout=30)  # flush the usage log before reading it
        time.sleep(0.5 if world is None else 0)

        audit = verify(since_filter(UsageLines(Path(config.logs.dir)), started), config, keep=20)
        checks.append(CheckResult("verify: routing and header hygiene hold", audit.ok, audit.verdict))
        metrics = {
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "plan": asdict(plan),
            "target": where,
            "calls": {"total": len(calls), "failed": sum(not c.ok for c in calls)},
            "warmup": warmup,
            "client": client_stats(calls),
            "log": log_stats(Path(config.logs.dir), phases.windows, config.routing.default_lane),
            "phases": {
                k: [a.isoformat(timespec="milliseconds"), b.isoformat(timespec="milliseconds")]
                for k, (a, b) in phases.windows.items()
            },
            "verify": {"ok": audit.ok, "verdict": audit.verdict, "headline": audit.headline},
            "checks": [asdict(c) for c in checks],
        }

        def evidence() -> dict[str, str]:
            metrics["checks"] = [asdict(c) for c in checks]
            return {
                "SUMMARY.md": render_summary(metrics, checks),
                "TESTS.md": render_tests(checks),
                "METRICS.json": json.dumps(metrics, indent=2) + "\n",
                "VERIFY.txt": format_verify(audit, proof=True),
            }

        files = evidence()
        findings = write_evidence(folder, files, keys)
        if not findings:
            # The scan is itself a check: write every file again so all of them list it.
            checks.append(
                CheckResult("evidence: no secret in the files", True, f"{', '.join(files)} scanned")
            )
            findings = write_evidence(folder, evidence(), keys)
        if findings:
            checks = [c for c in checks if not c.name.startswith("evidence:")]
            checks.append(CheckResult("evidence: no secret in the files", False, "; ".join(findings[:5])))
            paths.write_private(folder / "TESTS.md", render_tests(checks).encode())
        else:
            _remember(folder)
        return RunResult(folder, checks, audit.verdict)
    finally:
        if world is not None:
            world.close()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _remember(folder: Path) -> None:
    state = paths.ensure_private_dir(paths.state_home())
    paths.write_private(state / ENDURANCE_POINTER, json.dumps({"folder": str(folder.resolve())}).encode())
