"""ccctl summarize / verify / bundle: read the usage logs locally, or ask the daemon for a bundle.

summarize and verify need no daemon and no network: they read ``logs.dir`` (or ``--logs-dir``,
e.g. an unpacked review bundle) and call the pure functions in :mod:`ccmitm.reports.summary`
and :mod:`ccmitm.reports.audit`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ccmitm import paths
from ccmitm.cli.common import echo_json, fail, load_config
from ccmitm.config.model import Config
from ccmitm.control.client import DaemonNotRunning, call
from ccmitm.control.protocol import ControlError
from ccmitm.reports import audit as audit_report
from ccmitm.reports import summary as summary_report
from ccmitm.reports.bundle import make_bundle
from ccmitm.reports.prices import PriceTable
from ccmitm.reports.records import UsageLines, parse_duration
from ccmitm.reports.text import format_summary, format_verify

#: The daemon answers a bundle request when the bundle is done; gzip of a big log takes a while.
BUNDLE_TIMEOUT_S = 600.0


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


_since_option = click.option(
    "--since", metavar="DURATION", help="Only lines from the last DURATION (30m, 24h, 7d, 1h30m)."
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
_logs_option = click.option(
    "--logs-dir",
    type=click.Path(path_type=Path),
    help="Read usage.jsonl from this dir (e.g. an unpacked bundle), or this one usage file, "
    "instead of logs.dir.",
)

#: A logs dir or file that does not exist: nothing was read, so there is no report to give.
EXIT_NO_LOGS = 2


def _usage_lines(config: Config, logs_dir: Path | None, since: datetime | None) -> UsageLines:
    """The usage lines to read; exit 2 with one line when their dir or file does not exist.

    Reading a path that is not there would report on zero lines as if the log were empty, and an
    audit must never look clean because it was pointed at the wrong place."""
    where = logs_dir if logs_dir is not None else Path(config.logs.dir)
    if not where.exists():
        source = "--logs-dir" if logs_dir is not None else "logs.dir"
        hint = "check the path" if logs_dir is not None else "has ccmitmd run with this config yet?"
        fail(f"{source} {where} does not exist, nothing to read ({hint})", code=EXIT_NO_LOGS)
    return UsageLines(where, since=since)


@click.command("summarize")
@_since_option
@_json_option
@_logs_option
@click.pass_context
def summarize(ctx: click.Context, since: str | None, as_json: bool, logs_dir: Path | None) -> None:
    """Per-lane calls, errors, latency and tokens, A/B breakdowns, and what the offload saved."""
    config = load_config(ctx)
    start = _since(since)
    lines = _usage_lines(config, logs_dir, start)
    result = summary_report.summarize(
        lines, since=start, default_lane=config.routing.default_lane, prices=PriceTable.from_config(config)
    )
    result["window"]["skipped_lines"] = lines.skipped  # known only once the files were read
    result["window"]["files"] = [str(path) for path in lines.files]
    # Rotated files --since did not need to open (all older than the window, by their names).
    result["window"]["files_not_read"] = [str(path) for path in lines.files_not_read]
    if as_json:
        echo_json(result)
    else:
        click.echo(format_summary(result), nl=False)


@click.command("verify")
@click.option("--proof", is_flag=True, help="Print the log lines that justify each verdict.")
@_since_option
@_json_option
@_logs_option
@click.pass_context
def verify(ctx: click.Context, proof: bool, since: str | None, as_json: bool, logs_dir: Path | None) -> None:
    """Audit routing and header hygiene in the usage log.

    Exit 0 when every check holds, 1 on any violation, 2 when the logs dir or file does not exist,
    3 when there is nothing to audit (no usage lines in the window: never a pass)."""
    config = load_config(ctx)
    start = _since(since)
    # Unparseable lines are not skipped here: the audit reports each one (check e).
    audit = audit_report.verify(_usage_lines(config, logs_dir, start), config, since=start)
    if as_json:
        echo_json(audit.to_dict(proof=proof))
    else:
        click.echo(format_verify(audit, proof=proof), nl=False)
    sys.exit(audit.exit_code)


@click.command("bundle")
@_json_option
@click.pass_context
def bundle(ctx: click.Context, as_json: bool) -> None:
    """Write a review bundle (dir + .tgz) into bundle.dir now; by the daemon if it is running."""
    config = load_config(ctx)
    result: dict[str, Any]
    try:
        result = call(config.socket_path(), "bundle", timeout=BUNDLE_TIMEOUT_S)
        where = "ccmitmd"
    except DaemonNotRunning:
        # No daemon: do it here. The lane keys are resolved from this shell's environment, so the
        # exact-value scan covers them only if they are set here too (the patterns always apply).
        result = make_bundle(config, paths.state_home(), datetime.now(UTC)).to_dict()
        where = "ccctl (daemon not running)"
    except ControlError as exc:
        fail(str(exc))
    if as_json:
        echo_json(result)
    elif result.get("ok"):
        click.echo(f"bundle written by {where}: {result.get('path')}")
        click.echo(f"archive: {result.get('archive')}")
        click.echo(
            f"{result.get('usage_lines', 0)} usage lines since {result.get('window_start')}; "
            f"routing audit {_bundle_verdict(result)}"
        )
        for path in result.get("pruned") or []:
            click.echo(f"removed old bundle: {path}")
    else:
        click.echo(f"ccctl: bundle failed ({where}): {result.get('error')}", err=True)
        for finding in result.get("findings") or []:
            click.echo(f"  {finding}", err=True)
    if not result.get("ok"):
        sys.exit(1)


def _bundle_verdict(result: dict[str, Any]) -> str:
    """The audit's verdict inside a bundle, in words: passed, nothing to audit, or FAILED."""
    if result.get("verify_ok"):
        return "passed"
    if result.get("verify_outcome") == audit_report.OUTCOME_NOTHING:
        return "had nothing to audit (no usage lines in the window)"
    return "FAILED (see VERIFY.txt)"
