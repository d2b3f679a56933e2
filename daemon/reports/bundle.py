"""The review bundle: recent usage, metrics, the routing audit, config, daemon log -> dir + .tgz.

Everything is assembled in a private staging directory under the state dir, scrubbed with
:func:`redact_text`, then scanned (directory and tarball) with :func:`scan_tree`, including the
lane keys' own values. Only a bundle that scans clean is moved into ``bundle.dir`` (usually
~/Downloads, which may be synced or shared), and it is scanned again there; on any finding it is
removed and the run fails. Retention only ever touches names this module makes:
``<prefix>-YYYYmmdd-HHMMSS`` (directory) and ``<prefix>-YYYYmmdd-HHMMSS.tgz`` (file).

Blocking from start to end (file I/O, gzip): the daemon runs it in a thread executor.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from ccmitm import __version__
from ccmitm.config.clienttoken import FILE_NAME as CLIENT_TOKEN_FILE
from ccmitm.config.clienttoken import read_token
from ccmitm.config.keys import resolve_lane_keys
from ccmitm.config.model import Config
from ccmitm.core.redact import exact_values, redact_text, scan_text_with
from ccmitm.logs.daemonlog import DAEMON_LOG
from ccmitm.logs.files import all_files, read_lines
from ccmitm.paths import atomic_file, ensure_private_dir, write_atomic
from ccmitm.reports.audit import Audit
from ccmitm.reports.bundle_state import (
    ENDURANCE_FILES,
    STATE_FILE,
    bundle_name,
    latest_endurance_evidence,
    load_last_success,
    prune_bundles,
    record_run,
    remove_entry,
)
from ccmitm.reports.html import ReportPage
from ccmitm.reports.prices import PriceTable
from ccmitm.reports.records import Record, UsageLines
from ccmitm.reports.secretscan import Finding, iter_files, scan_bytes, scan_tree
from ccmitm.reports.summary import Summary
from ccmitm.reports.text import format_verify

STAGING_DIR = "bundle-staging"
LOCK_FILE = "bundle.lock"
#: Staging entries older than this are leftovers of a crashed run.
STALE_STAGING_S = 6 * 3600
#: A bundle always covers at least this much, even right after the previous one.
MIN_WINDOW = timedelta(hours=24)
#: Proof lines per check in VERIFY.txt (the full lines are in usage.jsonl anyway).
VERIFY_PROOF_KEEP = 50
FILE_MODE = 0o600

README = """\
ccmitm review bundle {name}
created {created} by ccmitm {version}
usage window: {window_start} .. {created} (since the previous successful bundle, at least 24 h)

Files
- README.txt            this file.
- usage.jsonl           the usage log lines in the window, one JSON object per call (lane, rule,
                        reason, model, status, latency, tokens, header mode, HTTP versions). It
                        never held keys, headers or bodies; it was scrubbed anyway.
- METRICS.json          `ccctl summarize --json` over usage.jsonl: per lane calls, errors,
                        p50/p95 duration and time to first byte, tokens, breakdowns by header
                        mode and HTTP version, and the offload savings estimate.
- VERIFY.txt            `ccctl verify --proof` over usage.jsonl: the routing and header-hygiene
                        audit, one line per check, the verdict, and the log lines behind it
                        (a window without usage lines reads NOTHING TO AUDIT, never PASS).
- REPORT.html           a self-contained page (no network, no external scripts): calls and
                        p50/p95 latency per lane over the window as charts, and the verdict.
- config.redacted.yaml  the effective configuration the bundle was made with. Lane keys are
                        never part of the config (they come from the environment or a key file).
- daemon.log            ccmitmd's own log (start, reloads, warnings, errors) for the window,
                        scrubbed.
- VERSION.txt           ccmitm, mitmproxy and Python versions and the platform.

Scrubbing: every file was passed through ccmitm's secret redaction (sk-ant-... keys and OAuth
tokens, Bearer tokens, x-api-key values, Z.AI keys, and the configured lane keys' exact values),
then the directory and the .tgz were scanned for the same; a bundle with any finding is deleted,
never kept. Redacted text reads [REDACTED:<kind>].
"""


# --- the bundle ----------------------------------------------------------------------------------
@dataclass
class BundleResult:
    ok: bool
    started: str
    path: str | None = None  # the bundle directory
    archive: str | None = None  # the .tgz
    window_start: str | None = None
    usage_lines: int = 0
    skipped_lines: int = 0
    verify_ok: bool | None = None  # the routing audit passed (False on a failure or on nothing to audit)
    verify_outcome: str | None = None  # pass, fail or "nothing to audit" (a window without usage lines)
    findings: list[str] = field(default_factory=list)  # file:line: kind, never the secret
    pruned: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    to_dict = as_dict


class BundleError(RuntimeError):
    def __init__(self, message: str, findings: list[Finding] | None = None):
        super().__init__(message)
        self.findings = findings or []


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo else now.astimezone()


def _local(now: datetime, timezone: str | None) -> datetime:
    """The stamp in the bundle's stated zone (config), else the machine's local time."""
    return now.astimezone(ZoneInfo(timezone)) if timezone else now.astimezone()


def _write(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"), FILE_MODE)


@contextlib.contextmanager
def _text_file(path: Path) -> Iterator[io.TextIOWrapper]:
    """A text file written line by line (a log copy), replacing ``path`` atomically at the end."""
    with atomic_file(path, FILE_MODE) as raw:
        out = io.TextIOWrapper(raw, encoding="utf-8")
        yield out
        out.flush()
        out.detach()  # the atomic writer syncs and closes the file itself


def _lane_key_values(
    config: Config, lane_keys: Mapping[str, str | None] | None, state_dir: Path
) -> dict[str, str]:
    if lane_keys is None:
        resolved = resolve_lane_keys(config)
        values = {name: key.value for name, key in resolved.items() if key.value}
        with contextlib.suppress(OSError):  # the client token counts as a secret too
            token = read_token(state_dir / CLIENT_TOKEN_FILE)
            if token:
                values["client-token"] = token
        return values
    return {name: value for name, value in lane_keys.items() if value}


#: The copied usage lines are scrubbed in blocks of about this many bytes (whole lines), not one
#: regex pass per line.
_REDACT_BLOCK = 1 << 20


def _copy_usage(
    lines: UsageLines, target: Path, keys: Mapping[str, str], consumers: list[Callable[[Record], None]]
) -> tuple[int, bool]:
    """One pass over the usage lines in the window: each is copied to ``target`` (scrubbed) and
    handed to every consumer (the summary, the audit, the page).

    Returns (lines copied, whether the copy is proven clean). Each block written is scanned as it
    is written, with the scanner's own patterns and decoding (latin-1: one character per byte), as
    one text: a block holds whole lines, so that finds everything a line-by-line scan of the file
    finds. An ASCII block the scan finds clean is written as it is (the redactor, with the same
    patterns over the same text, would change nothing); any other block is redacted and its
    result scanned. So the copy costs one regex pass, not a redaction and then a scan."""
    extras = exact_values(keys)
    written = 0
    proven = True
    block: list[bytes] = []
    size = 0
    with atomic_file(target, FILE_MODE) as out:

        def flush() -> bool:
            data = b"".join(block)
            block.clear()
            if data.isascii() and not scan_text_with(data.decode("ascii"), extras):
                out.write(data)
                return True
            data = _redact_lines(data.decode("utf-8", "replace"), keys).encode("utf-8")
            out.write(data)
            return not scan_text_with(data.decode("latin-1"), extras)

        for raw, record in lines.with_text():
            line = raw.rstrip(b"\r\n") + b"\n"
            block.append(line)
            size += len(line)
            if size >= _REDACT_BLOCK:
                proven &= flush()
                size = 0
            for consume in consumers:
                consume(record)
            written += 1
        proven &= flush()
    return written, proven


def _redact_lines(text: str, keys: Mapping[str, str]) -> str:
    """``text`` redacted line by line: the redactor may return a line's decoded view (control
    characters dropped), which must not join it to the next one."""
    lines = text.split("\n")  # not splitlines(): a JSON string may hold U+2028 and friends raw
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(redact_text(line, keys) + "\n" for line in lines)


def _copy_daemon_log(state_dir: Path, target: Path, window_start: datetime, keys: Mapping[str, str]) -> None:
    """The daemon's log files touched within the window (rotated ones too), oldest first, scrubbed."""
    cutoff = window_start.timestamp()
    with _text_file(target) as out:
        for path in all_files(state_dir / DAEMON_LOG):
            try:
                if path.stat().st_mtime < cutoff:
                    continue  # last written before the window: all of it is older
            except FileNotFoundError:
                continue
            for raw in read_lines(path):
                out.write(redact_text(raw.decode("utf-8", "replace").rstrip("\r\n"), keys) + "\n")


def _copy_endurance(state_dir: Path, target: Path, keys: Mapping[str, str]) -> None:
    """The newest `ccctl endurance` evidence (SUMMARY.md, TESTS.md, METRICS.json, VERIFY.txt), scrubbed."""
    source = latest_endurance_evidence(state_dir)
    if source is None:
        return
    target.mkdir(mode=0o700)
    for name in ENDURANCE_FILES:
        with contextlib.suppress(FileNotFoundError):
            _write(
                target / name,
                _redact_lines((source / name).read_text(encoding="utf-8", errors="replace"), keys),
            )


def _versions() -> str:
    def dist(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"ccmitm {__version__}\n"
        f"mitmproxy {dist('mitmproxy')}\n"
        f"apscheduler {dist('apscheduler')}\n"
        f"python {platform.python_version()} ({sys.implementation.name})\n"
        f"platform {platform.platform()}\n"
    )


def _config_yaml(config: Config, keys: Mapping[str, str]) -> str:
    text = "# the effective ccmitm configuration (lane keys are never part of it)\n"
    text += yaml.safe_dump(config.redacted(), sort_keys=False, default_flow_style=False)
    return redact_text(text, keys)


def _tar(source: Path, archive: Path) -> None:
    def scrub_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # Local user and group names say nothing a reviewer needs.
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with (
        atomic_file(archive, FILE_MODE) as raw,
        tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar,
    ):
        tar.add(source, arcname=source.name, filter=scrub_owner)


def _scan(paths: list[Path], keys: Mapping[str, str], base: Path) -> list[Finding]:
    findings: list[Finding] = []
    for path in paths:
        for finding in scan_tree(path, keys):
            # Report paths relative to the bundle's directory: shorter, and no home dir in logs.
            name = finding.file
            with contextlib.suppress(ValueError):
                name = str(Path(finding.file.split("!", 1)[0]).relative_to(base)) + (
                    "!" + finding.file.split("!", 1)[1] if "!" in finding.file else ""
                )
            findings.append(Finding(name, finding.pattern, finding.line, finding.count))
    return findings


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _digests(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (as scan_tree sees them): relative path -> sha256."""
    return {str(path.relative_to(root)): _digest(path) for path in iter_files(root)}


def _scan_unless_scanned(root: Path, scanned: Mapping[str, str], keys: Mapping[str, str]) -> list[Finding]:
    """Scan the files under ``root`` that are not byte for byte a file that passed the scan."""
    findings: list[Finding] = []
    for path in iter_files(root):
        relative = str(path.relative_to(root))
        if scanned.get(relative) != _digest(path):
            findings += _scan([path], keys, root)
    return findings


def _scan_archive(archive: Path, scanned: Mapping[str, str], keys: Mapping[str, str]) -> list[Finding]:
    """The archive's members that are not exactly a scanned file are scanned; the rest are clean.

    (The scanner reads a tarball's members, not its headers, so this is the same check as
    scanning the whole archive, without the regexes over content that already passed them.)"""
    findings: list[Finding] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            inner = tar.extractfile(member)
            if inner is None:
                continue
            digest = hashlib.sha256()
            with inner:
                while chunk := inner.read(1 << 20):
                    digest.update(chunk)
            relative = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if scanned.get(relative) == digest.hexdigest():
                continue
            extracted = tar.extractfile(member)
            data = extracted.read() if extracted is not None else b""
            findings += scan_bytes(data, f"{archive.name}!{member.name}", keys)
    return findings


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    """One bundle at a time per state dir: the nightly job and a `ccctl bundle` may overlap, in
    threads of one daemon or (rarely) in two processes. flock covers both; the second waits."""
    ensure_private_dir(state_dir)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _clear_stale_staging(staging_root: Path, now: float) -> None:
    """Remove what crashed runs left in staging (ours alone; a live run is far younger)."""
    for entry in staging_root.iterdir():
        with contextlib.suppress(OSError):
            if now - entry.lstat().st_mtime > STALE_STAGING_S:
                remove_entry(entry)


def make_bundle(
    config: Config,
    state_dir: Path,
    now: datetime,
    *,
    lane_keys: Mapping[str, str | None] | None = None,
    logs_dir: Path | None = None,
    record: bool = True,
) -> BundleResult:
    """Create ``<bundle.dir>/<prefix>-<YYYYmmdd-HHMMSS>/`` and its ``.tgz``; prune; remember the run.

    ``now`` is the run's time (aware; a naive one is taken as local time): it names the bundle,
    ends the usage window and is recorded as the run's ``at``. ``lane_keys`` (lane -> key value)
    are scanned for as exact strings; by default they are resolved from the environment/key files
    like the daemon does. The result never holds a secret. Never raises for an operational failure:
    it returns ``ok=False`` with ``error``, having removed anything it wrote. Blocking.
    """
    now = _aware(now)
    state_dir = Path(state_dir)
    result = BundleResult(ok=False, started=now.astimezone(UTC).isoformat(timespec="seconds"))
    try:
        with _exclusive(state_dir):
            _build(config, state_dir, now, lane_keys, logs_dir, result)
    except Exception as exc:  # e.g. the state dir itself is unwritable
        result.error = result.error or redact_text(f"{type(exc).__name__}: {exc}")
    if record:
        try:
            record_run(state_dir, at=now, path=result.path, ok=result.ok, error=result.error)
        except OSError as exc:  # the bundle itself is fine; say why the next catch-up may repeat it
            note = f"could not record the run in {state_dir / STATE_FILE}: {exc.strerror}"
            result.error = f"{result.error}; {note}" if result.error else note
    return result


def _build(
    config: Config,
    state_dir: Path,
    now: datetime,
    lane_keys: Mapping[str, str | None] | None,
    logs_dir: Path | None,
    result: BundleResult,
) -> None:
    bundle_cfg = config.bundle
    out_dir = Path(bundle_cfg.dir)
    logs = Path(logs_dir) if logs_dir is not None else Path(config.logs.dir)
    created: list[Path] = []  # only what this run put into out_dir, so a failure removes just that
    staging_root = ensure_private_dir(state_dir / STAGING_DIR)
    _clear_stale_staging(staging_root, now.timestamp())
    # Staging lives in the private state dir, so nothing unscanned ever appears in bundle.dir.
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=staging_root))
    try:
        keys = _lane_key_values(config, lane_keys, state_dir)
        last = load_last_success(state_dir)
        window_start = now - MIN_WINDOW
        if last is not None and last.at < window_start:
            window_start = last.at  # the daemon was down or a run failed: cover the gap
        result.window_start = window_start.astimezone(UTC).isoformat(timespec="seconds")

        if not out_dir.exists():
            out_dir.mkdir(parents=True, mode=0o700)
        stamp = _local(now, bundle_cfg.timezone)
        name = bundle_name(bundle_cfg.prefix, stamp)
        # Two runs in one second: step the stamp forward so the name keeps the pattern retention
        # relies on (a "-2" suffix would make the bundle invisible to pruning).
        while (out_dir / name).exists() or (out_dir / f"{name}.tgz").exists():
            stamp += timedelta(seconds=1)
            name = bundle_name(bundle_cfg.prefix, stamp)
        stage = run_dir / name
        stage.mkdir(mode=0o700)

        # The log is read once: every line in the window is copied and fed to the three reports.
        lines = UsageLines(logs, since=window_start, keep_unparseable=VERIFY_PROOF_KEEP)
        summary = Summary(default_lane=config.routing.default_lane, prices=PriceTable.from_config(config))
        auditor = Audit(config, keep=VERIFY_PROOF_KEEP)
        report_page = ReportPage()
        result.usage_lines, usage_proven = _copy_usage(
            lines, stage / "usage.jsonl", keys, [summary.add, auditor.add, report_page.add]
        )
        result.skipped_lines = lines.skipped + lines.undated
        metrics = summary.result(skipped_lines=result.skipped_lines)
        metrics["window"]["since"] = result.window_start
        _write(stage / "METRICS.json", redact_text(json.dumps(metrics, indent=2) + "\n", keys))
        auditor.add_unparseable(lines.skipped, lines.unparseable)
        audit = auditor.finish()
        result.verify_ok, result.verify_outcome = audit.ok, audit.outcome
        verify_text = format_verify(audit, proof=True) + f"exit code: {audit.exit_code}\n"
        _write(stage / "VERIFY.txt", redact_text(verify_text, keys))
        page = report_page.render(
            audit.to_dict(),
            window_start,
            now,
            config.routing.default_lane,
            title=name,
            savings=metrics["offload"],
        )
        _write(stage / "REPORT.html", redact_text(page, keys))
        _write(stage / "config.redacted.yaml", _config_yaml(config, keys))
        _copy_daemon_log(state_dir, stage / "daemon.log", window_start, keys)
        _write(stage / "VERSION.txt", _versions())
        _copy_endurance(state_dir, stage / "endurance", keys)
        _write(
            stage / "README.txt",
            README.format(
                name=name,
                created=now.astimezone(UTC).isoformat(timespec="seconds"),
                version=__version__,
                window_start=result.window_start,
            ),
        )

        # The usage copy was scanned as it was written; everything else is scanned now (and the
        # copy too, if a block of it did not come out clean: then the findings name its lines).
        findings = _scan(
            [path for path in iter_files(stage) if not (usage_proven and path == stage / "usage.jsonl")],
            keys,
            stage,
        )
        if findings:
            raise BundleError("the scrubbed bundle still failed the secret scan", findings)
        # What passed the scan, by content. Everything written from here on must be made of
        # exactly those bytes, or be scanned itself: the scan (the slow part, regexes over every
        # byte) then runs once over the usage copy instead of four times.
        scanned = _digests(stage)
        archive_stage = run_dir / f"{name}.tgz"
        _tar(stage, archive_stage)
        findings = _scan_archive(archive_stage, scanned, keys)
        if findings:
            raise BundleError("the bundle's archive failed the secret scan", findings)
        archive_digest = _digest(archive_stage)

        final_dir, final_archive = out_dir / name, out_dir / f"{name}.tgz"
        for source, target in ((stage, final_dir), (archive_stage, final_archive)):
            if target.exists() or target.is_symlink():  # never move into or over something else
                raise BundleError(f"{target} appeared while the bundle was being made")
            shutil.move(source, target)
            created.append(target)
        # Check what actually sits in the bundle directory: no secret may be left there, whatever
        # the code before meant to write. A file identical to one that passed the scan is clean;
        # any other file (changed, added) is scanned here.
        findings = _scan_unless_scanned(final_dir, scanned, keys)
        if _digest(final_archive) != archive_digest:
            findings += _scan([final_archive], keys, out_dir)
        if findings:
            raise BundleError("the bundle failed the secret scan after it was moved into place", findings)

        result.ok = True
        result.path, result.archive = str(final_dir), str(final_archive)
        pruned = prune_bundles(out_dir, bundle_cfg.prefix, bundle_cfg.keep, protect=name)
        result.pruned = [str(path) for path in pruned]
    except BundleError as exc:
        result.error = str(exc)
        if exc.findings:
            result.error += f" ({len(exc.findings)} finding(s)); the bundle was removed"
        result.findings = [str(finding) for finding in exc.findings]
    except Exception as exc:  # a full disk, a permission problem: report it, leave nothing half-made
        result.error = redact_text(f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        if not result.ok:
            for path in created:
                remove_entry(path)
            result.path = result.archive = None
