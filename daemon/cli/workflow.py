"""ccctl commands for working with subagents: `subagent install|remove`, `prompt`, `endurance`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ccmitm.cli.common import fail
from ccmitm.cli.completion import complete_prompt_name
from ccmitm.install import prompts, subagent


# --- subagent ------------------------------------------------------------------------------------
@click.group("subagent")
def subagent_group() -> None:
    """Install or remove the `haiku-subagent` Claude Code agent (model: haiku, so it is offloaded)."""


_scope_option = click.option(
    "--scope",
    type=click.Choice(["user", "project"]),
    default="user",
    show_default=True,
    help="user: ~/.claude/agents/; project: .claude/agents/ at the git root of the current directory "
    "(the current directory when it is not in a git work tree).",
)
_force_option = click.option(
    "--force",
    is_flag=True,
    help="Also replace/delete a file ccmitm did not write or one edited since; a copy is kept as "
    "haiku-subagent.md.<UTC time>.bak.",
)


def _agent_path(scope: str) -> Path:
    return subagent.agent_path(scope, Path.home(), Path.cwd())


@subagent_group.command("install")
@_scope_option
@_force_option
def subagent_install(scope: str, force: bool) -> None:
    """Write haiku-subagent.md. Idempotent; never replaces a file it did not write, or one edited
    since, without --force."""
    outcome = subagent.install(_agent_path(scope), force=force)
    if not outcome.ok:
        fail(outcome.message)
    click.echo(outcome.message)
    if outcome.action in ("installed", "updated"):
        click.echo(
            'next: eval "$(ccctl env --subagent)" (or `ccsub`, see `ccctl shell init`), start `claude`, '
            "and ask it to "
            "use the haiku-subagent; `ccctl status` then counts subagent calls per lane"
        )


@subagent_group.command("remove")
@_scope_option
@_force_option
def subagent_remove(scope: str, force: bool) -> None:
    """Delete haiku-subagent.md if ccmitm wrote it and it is unedited (else only with --force)."""
    outcome = subagent.remove(_agent_path(scope), force=force)
    if not outcome.ok:
        fail(outcome.message)
    click.echo(outcome.message)


@subagent_group.command("show")
def subagent_show() -> None:
    """Print the agent file ccmitm writes."""
    click.echo(subagent.render(), nl=False)


# --- prompt --------------------------------------------------------------------------------------
@click.command("prompt")
@click.argument("name", required=False, shell_complete=complete_prompt_name)
@click.option("--markdown", is_flag=True, help="All prompts as docs/PROMPTS.md.")
def prompt(name: str | None, markdown: bool) -> None:
    """Print a ready prompt (review, map, audit, explainer; or A-D), ready to paste. No NAME: list."""
    if markdown:
        click.echo(prompts.render_markdown(), nl=False)
        return
    if name is None:
        for item in prompts.PROMPTS:
            click.echo(f"{item.letter}  {item.name:<10} {item.title}: {item.when}")
        return
    found = prompts.find(name)
    if found is None:
        names = ", ".join(f"{p.name} ({p.letter})" for p in prompts.PROMPTS)
        fail(f"no prompt {name!r}; choose one of: {names}")
    click.echo(found.text, nl=False)


# --- endurance -----------------------------------------------------------------------------------
@click.command("endurance")
@click.option(
    "--minutes", type=click.FloatRange(min=0.01), default=5.0, show_default=True, help="Soak length."
)
@click.option(
    "--against",
    type=click.Choice(["fake", "live"]),
    default="fake",
    show_default=True,
    help="fake: local fake upstreams and a private ccmitmd (offline); live: the running daemon, real calls.",
)
@click.option("--chaos", is_flag=True, help="Also restart the daemon mid-stream (fake only).")
@click.option("--parallel", type=click.IntRange(1, 64), default=12, show_default=True)
@click.option("--burst", type=click.IntRange(1, 500), default=40, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Evidence folder (default: a new ccmitm-endurance-<stamp>/ under the state dir).",
)
@click.option("--yes", is_flag=True, help="Required for --against live: it spends real tokens.")
@click.pass_context
def endurance(
    ctx: click.Context,
    minutes: float,
    against: str,
    chaos: bool,
    parallel: int,
    burst: int,
    out: Path | None,
    yes: bool,
) -> None:
    """Run the endurance plan and leave METRICS.json, SUMMARY.md and TESTS.md behind."""
    from ccmitm.cli.common import config_path, load_config
    from ccmitm.endurance import run

    plan = run.Plan(minutes=minutes, against=against, chaos=chaos, parallel=parallel, burst=burst)
    problem = run.check_plan(plan, yes=yes, environ=os.environ)
    if problem:
        raise click.UsageError(problem)
    folder = out or run.default_out_dir()
    config = load_config(ctx) if against == "live" else None
    result = run.run(plan, folder, config=config, config_file=config_path(ctx), echo=click.echo)
    click.echo(f"evidence: {result.folder}")
    click.echo(f"checks: {result.passed} passed, {result.failed} failed; verify: {result.verify_verdict}")
    if result.failed:
        sys.exit(1)


COMMANDS = [subagent_group, prompt, endurance]
