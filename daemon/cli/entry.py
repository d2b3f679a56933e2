"""The ``ccctl`` entry point: `ccctl statusline` before anything heavy loads, else the click app.

Claude Code runs `ccctl statusline` after every assistant message and waits for it; click alone
costs more than a bare Python start. So the arguments are looked at by hand first, and only the
other commands pay for click (and each of them only for the modules it uses, see cli/main.py).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config_option, rest = _global_config(args)
    if rest[:1] == ["statusline"]:
        from ccmitm.cli.statusline import run

        sys.exit(run(rest[1:], config_option))
    from ccmitm.cli.main import main as click_main

    click_main(args)


def _global_config(args: list[str]) -> tuple[str | None, list[str]]:
    """``--config PATH`` (or ``--config=PATH``) before the command, and the arguments after it."""
    if args[:1] == ["--config"] and len(args) >= 2:
        return args[1], args[2:]
    if args[:1] and args[0].startswith("--config="):
        return args[0].partition("=")[2], args[1:]
    return None, args


if __name__ == "__main__":  # pragma: no cover
    main()
