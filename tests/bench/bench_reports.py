"""The reports at log scale: ccctl summarize, verify and the bundle over a generated usage log.

Not a test: it measures and writes its own section of docs/PERFORMANCE.md (between the
``SECTION reports`` markers, which `make bench` runs after the proxy benchmark has rewritten the
rest) and docs/performance-reports.json. Run it alone: ``python tests/bench/bench_reports.py``.

The log is generated here, so anyone can rerun it: 200,000 lines made from the UsageRecord's own
fields (``UsageRecord.to_line()``, the daemon's own encoder) over ten days, rotated the way the
daemon rotates (a gzipped file per day, named after its rotation time, and the live file), about
what the default rotation keeps. The yardstick is the plainest possible reader over the same
files: ``json.loads`` on every line (stdlib, gzip included). Each command runs in this process
through ccctl's own click entry point (config load, reading, output), interleaved with the
yardstick in rounds; the median of the paired ratios is reported.

Knobs (environment): BENCH_SMOKE=1 (2,000 lines, one round), BENCH_REPORT_LINES, BENCH_REPORT_ROUNDS,
BENCH_OUT (output directory, default docs/).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT)]

import yaml  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from ccmitm.cli.main import main as ccctl  # noqa: E402
from ccmitm.config.load import validate  # noqa: E402
from ccmitm.logs.files import ROTATED_STAMP  # noqa: E402
from ccmitm.logs.usage import USAGE_FILE, UsageRecord  # noqa: E402
from ccmitm.reports.bundle import make_bundle  # noqa: E402
from ccmitm.reports.bundle_state import record_run  # noqa: E402

SMOKE = os.environ.get("BENCH_SMOKE") == "1"
LINES = int(os.environ.get("BENCH_REPORT_LINES", 2_000 if SMOKE else 200_000))
ROUNDS = int(os.environ.get("BENCH_REPORT_ROUNDS", 1 if SMOKE else 3))
DAYS = 10
SECTION_START = "<!-- SECTION reports: written by tests/bench/bench_reports.py -->"
SECTION_END = "<!-- END SECTION reports -->"
HAND_START = "<!-- HAND-KEPT"

#: The targets: each command's time over the yardstick's (json.loads over the same files).
TARGETS = {
    "summarize": 1.0,
    "verify": 1.0,
    "summarize --since 24h": 0.3,
    "bundle (24 h window)": 1.5,
    "bundle (whole log: a catch-up)": 1.5,
}


# --- the log -------------------------------------------------------------------------------------
def _record(rng: random.Random, stamp: datetime, sessions: list[str]) -> UsageRecord:
    """One call as the daemon logs it: mostly Haiku offloaded, Sonnet and Opus at home, a few
    refusals, failovers and requests ccmitm answered itself."""
    pick = rng.random()
    ts = stamp.isoformat(timespec="milliseconds")
    session = rng.choice(sessions)
    ident = str(uuid.UUID(int=rng.getrandbits(128), version=4))  # mitmproxy's flow ids are uuid4
    if pick < 0.01:  # answered by ccmitm: no lane
        return UsageRecord(
            ts, ident, "reverse", None, None, rng.choice(["unauthenticated", "rejected"]), "POST",
            "/v1/messages", None, None, rng.choice([407, 400]), False, None, round(rng.uniform(0.1, 1), 3),
            None, None, None, None, "none", "HTTP/1.1", None, None, "no client token",
        )  # fmt: skip
    haiku = pick < 0.56
    status = 200 if rng.random() > 0.03 else rng.choice([429, 529, 500])
    ok = status == 200
    model = (
        "claude-haiku-4-5-20251001" if haiku else rng.choice(["claude-sonnet-4-5"] * 4 + ["claude-opus-4-5"])
    )
    duration = round(rng.lognormvariate(7.5 if haiku else 8.3, 0.6), 3)
    return UsageRecord(
        ts=ts,
        id=ident,
        listener=rng.choice(["intercept", "reverse"]),
        lane="zai" if haiku else "anthropic",
        rule="*haiku*" if haiku else None,
        reason="rule" if haiku else "default",
        method="POST",
        path="/v1/messages",
        model=model,
        upstream_model="glm-4.5-air" if haiku else model,
        status=status,
        stream=True,
        ttfb_ms=round(duration * rng.uniform(0.05, 0.3), 3),
        duration_ms=duration,
        input_tokens=rng.randint(200, 30_000) if ok else None,
        output_tokens=rng.randint(5, 2_000) if ok else None,
        cache_read_input_tokens=rng.randint(0, 60_000) if ok else None,
        cache_creation_input_tokens=rng.randint(0, 5_000) if ok else None,
        header_mode=rng.choice(["x-api-key", "authorization"]) if haiku else "passthrough",
        http_version=rng.choice(["HTTP/1.1", "HTTP/2.0"]),
        upstream_http_version=rng.choice(["HTTP/1.1", "HTTP/2.0"]),
        session=session,
        error=None if ok else "upstream refused",
        request_class=rng.choice(["subagent", "subagent", "main", "compaction", None]),
        agent_type=rng.choice([None, "custom"]),
        refusal=None if ok or not haiku else "transient",
    )


def generate(logs: Path, lines: int, now: datetime) -> list[Path]:
    """``lines`` usage lines over the last DAYS days: one gzipped rotated file per day (named after
    its rotation, as the daemon names it) and the live file. Returns the files, oldest first."""
    rng = random.Random(20251124)
    sessions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(300)]
    logs.mkdir(parents=True, exist_ok=True)
    start = now - timedelta(days=DAYS)
    step = (now - start) / lines
    files: list[Path] = []
    day_lines: list[bytes] = []
    day = start.date()
    for index in range(lines):
        stamp = start + step * index
        if stamp.date() != day and day_lines:
            rotated = logs / f"{USAGE_FILE}.{stamp.strftime(ROTATED_STAMP)}.gz"
            with gzip.open(rotated, "wb", compresslevel=6) as out:
                out.write(b"".join(day_lines))
            files.append(rotated)
            day_lines, day = [], stamp.date()
        day_lines.append(_record(rng, stamp, sessions).to_line())
    live = logs / USAGE_FILE
    live.write_bytes(b"".join(day_lines))
    files.append(live)
    return files


# --- the measurements ----------------------------------------------------------------------------
def stdlib_loop(files: list[Path]) -> int:
    """The yardstick: read every line and json.loads it, nothing else."""
    count = 0
    for path in files:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for raw in handle:
                json.loads(raw)
                count += 1
    return count


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ccmitm-bench-reports-"))
    try:
        return _run(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path) -> dict[str, Any]:
    now = datetime.now(UTC)
    logs, state = root / "logs", root / "state"
    state.mkdir()
    started = time.perf_counter()
    files = generate(logs, LINES, now)
    generated_s = time.perf_counter() - started
    data = {
        "routing": {"default_lane": "anthropic", "rules": [{"match": "*haiku*", "lane": "zai"}]},
        "lanes": {
            "anthropic": {"url": "https://api.anthropic.com"},
            "zai": {"url": "https://api.z.ai/api/anthropic", "api_key_env": "ZAI_API_KEY"},
        },
        "logs": {"dir": str(logs)},
        "bundle": {"dir": str(root / "Downloads"), "keep": 1},
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    config = validate(data)
    runner = CliRunner()

    def command(*args: str, codes: tuple[int, ...] = (0,)) -> Callable[[], Any]:
        def call() -> Any:
            result = runner.invoke(ccctl, ["--config", str(config_path), *args], catch_exceptions=False)
            assert result.exit_code in codes, result.output[-2000:]
            return result

        return call

    def bundle(whole: bool) -> Callable[[], Any]:
        def call() -> Any:
            # A catch-up bundle covers everything since the last good run: make that the log's start.
            if whole:
                record_run(state, at=now - timedelta(days=DAYS + 1), path=None, ok=True, error=None)
            else:
                record_run(state, at=now - timedelta(hours=1), path=None, ok=True, error=None)
            result = make_bundle(
                config, state, datetime.now(UTC), lane_keys={"zai": "0" * 32 + ".benchbenchbench1"}
            )
            assert result.ok, result.error
            return result

        return call

    measured: dict[str, Callable[[], Any]] = {
        "summarize": command("summarize"),
        # The generated log holds no violation, so verify passes (exit 0); any other code is a bug.
        "verify": command("verify"),
        "summarize --since 24h": command("summarize", "--since", "24h"),
        "bundle (24 h window)": bundle(whole=False),
        "bundle (whole log: a catch-up)": bundle(whole=True),
    }
    # Each command runs right after its own yardstick run, and its ratio is the median of those
    # pairs: the machine's load drifts (it is shared), and a pair sees the same load.
    times: dict[str, list[float]] = {name: [] for name in ["json.loads loop", *measured]}
    ratios: dict[str, list[float]] = {name: [] for name in measured}
    for round_no in range(ROUNDS):
        names = list(measured)
        names = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in names:
            base_s, _ = timed(lambda: stdlib_loop(files))
            times["json.loads loop"].append(base_s)
            elapsed, _ = timed(measured[name])
            times[name].append(elapsed)
            ratios[name].append(elapsed / base_s)
    base = statistics.median(times["json.loads loop"])
    rows = []
    for name, target in TARGETS.items():
        ratio = statistics.median(ratios[name])
        rows.append(
            {
                "command": name,
                "median_s": round(statistics.median(times[name]), 3),
                "ratio": round(ratio, 3),
                "target": target,
                "met": ratio <= target,
            }
        )
    return {
        "date": now.isoformat(timespec="seconds"),
        "smoke": SMOKE,
        "lines": LINES,
        "bytes": sum(
            gzip.open(p).read().__len__() if p.name.endswith(".gz") else p.stat().st_size for p in files
        ),
        "files": len(files),
        "days": DAYS,
        "rounds": ROUNDS,
        "generated_s": round(generated_s, 1),
        "json_loads_loop_s": round(base, 3),
        "rows": rows,
    }


# --- the Markdown section ------------------------------------------------------------------------
def render(results: dict[str, Any]) -> str:
    mib = results["bytes"] / (1 << 20)
    lines = [
        SECTION_START,
        "## Reports at log scale",
        "",
        f"Generated by `python tests/bench/bench_reports.py` (also run by `make bench`) on {results['date']}"
        + (" (SMOKE run: too few lines to mean anything)" if results["smoke"] else "")
        + f": a generated usage log of {results['lines']:,} lines ({mib:.0f} MiB uncompressed) over "
        f"{results['days']} days in {results['files']} files (a gzipped file per day and the live file). "
        "The yardstick is a plain stdlib `json.loads` loop over the same files "
        f"({results['json_loads_loop_s']:.2f} s here); each command runs through ccctl's click entry point "
        "in-process, right after a run of the yardstick, and its ratio is the median over "
        f"{results['rounds']} rounds of those pairs (the machine is shared: a pair sees the same load).",
        "",
        "| command | median | ratio to the json.loads loop | target | met |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| `{row['command']}` | {row['median_s']:.2f} s | {row['ratio']:.2f} | ≤ {row['target']:.1f} | "
            f"{'yes' if row['met'] else '**no**'} |"
        )
    lines += [
        "",
        "One pass feeds summarize, verify and REPORT.html (the bundle reads the log once, copying and "
        "counting as it goes); lines parse with orjson; each record adds to one cell of the values the "
        "tables group on, and the tables are merged from the cells at the end; `--since` leaves rotated "
        "files unopened when their name (the moment ccmitm rotated them) is older than the window, and "
        "drops older lines of the files it does read on their timestamp, unparsed. The bundle's time "
        "beyond the pass is the secret scan of the usage copy (done block by block as it is written, "
        "once: the archive and the final place are proven byte-identical by sha256, or scanned again) "
        "and the gzip of the archive. The scan is what a catch-up bundle over the whole log pays for: "
        "the redactor's patterns cost tens of ms per MB (the case-insensitive Bearer and x-api-key ones "
        "and the Z.AI key one most), far more than parsing; only a faster redactor (core/redact.py) "
        "brings that case near the target.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, section: str) -> None:
    """Replace this benchmark's section in PERFORMANCE.md (before the hand-kept part if new)."""
    text = doc.read_text() if doc.exists() else "# Performance\n\n"
    pattern = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif HAND_START in text:
        at = text.index(HAND_START)
        text = text[:at] + section + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


def main() -> None:
    out_dir = Path(os.environ.get("BENCH_OUT", ROOT / "docs"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = run()
    (out_dir / "performance-reports.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(out_dir / "PERFORMANCE.md", render(results))
    for row in results["rows"]:
        print(f"{row['command']:32} {row['median_s']:7.2f} s  {row['ratio']:5.2f}x  (target {row['target']})")
    print(f"json.loads loop {results['json_loads_loop_s']:.2f} s over {results['lines']} lines")


if __name__ == "__main__":
    main()
