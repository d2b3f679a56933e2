"""ccmitm: a local routing proxy that offloads Claude Code's Haiku calls to another lane."""

from __future__ import annotations

import functools


@functools.cache
def _version() -> str:
    # importlib.metadata costs more than a bare Python start: it loads only when asked for
    # (``from ccmitm import __version__``), so `ccctl statusline` never pays for it.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ccmitm")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
