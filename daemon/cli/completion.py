"""Shell completion: `ccctl completion bash|zsh|fish`, and what completes config keys and prompts.

Click does the completing itself (the shell calls ccctl back with ``_CCCTL_COMPLETE`` set); this
module prints the script that wires a shell to it and supplies the candidates: config key paths
from the schema (``proxy.http2``, ``routing.rules[0].match``, ``routing.rules[+]``, the lanes the
config has) and the ready prompts' names. Completing never prints a warning: a broken config file
only means the built-in defaults' lanes are offered.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class

from ccmitm import paths
from ccmitm.cli.common import config_path

SHELLS = ("bash", "zsh", "fish")
PROG_NAME = "ccctl"
#: The variable click's completion protocol uses for a program called ccctl.
COMPLETE_VAR = "_CCCTL_COMPLETE"


def complete_config_key(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Key paths of the config schema that start with what was typed."""
    from ccmitm.config.edit import key_paths
    from ccmitm.config.errors import ConfigError
    from ccmitm.config.load import load

    # While completing, click parses without running the group's callback: --config is only in
    # the root context's params, not yet in ctx.obj.
    option = ctx.find_root().params.get("config_option")
    path = paths.resolve_config_path(option) if option else config_path(ctx)
    try:
        effective = load(path).config.model_dump(mode="json")
    except (ConfigError, OSError):
        effective = None  # the built-in defaults' entries
    return [CompletionItem(path) for path in key_paths(effective) if path.startswith(incomplete)]


def complete_prompt_name(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The ready prompts (`ccctl prompt NAME`), by name, with their titles as help."""
    from ccmitm.install.prompts import PROMPTS

    wanted = incomplete.lower()
    return [CompletionItem(p.name, help=p.title) for p in PROMPTS if p.name.startswith(wanted)]


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    bash: eval "$(ccctl completion bash)" in ~/.bashrc; zsh: the same with zsh in ~/.zshrc;
    fish: ccctl completion fish > ~/.config/fish/completions/ccctl.fish"""
    root = ctx.find_root().command
    completer_class = get_completion_class(shell)
    assert completer_class is not None  # the choice allows only shells click knows
    completer = completer_class(root, {}, PROG_NAME, COMPLETE_VAR)
    click.echo(completer.source())
