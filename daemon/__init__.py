"""ccmitm: a local routing proxy that offloads Claude Code's Haiku calls to another lane."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ccmitm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
