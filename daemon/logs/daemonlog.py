"""The daemon's operational log: stderr (for the service manager's journal) and a rotated file.

Only ccmitm's own records and mitmproxy's warnings reach it; mitmproxy's per-connection chatter
stays out (it is noise here, and a log is a place a secret could leak into).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ccmitm.config.model import Config
from ccmitm.core.redact import redact_text
from ccmitm.logs.files import RotatingAppendFile

DAEMON_LOG = "daemon.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Scrubs credentials from every formatted record: a log is a place a secret could leak into
    (an exception text, an upstream's error message), and the daemon log goes into bundles."""

    def __init__(self, fmt: str):
        super().__init__(fmt)
        self.secret_values: tuple[str, ...] = ()  # the lane keys in use, scrubbed by exact value

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), self.secret_values)


class RotatingFileHandler(logging.Handler):
    """A logging handler over RotatingAppendFile: one write per record, rename-and-reopen rotation."""

    def __init__(self, file: RotatingAppendFile):
        super().__init__()
        self.file = file

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\r", " ")
            # One physical line per record keeps the file greppable and line-safe.
            text = text.replace("\n", "\n    ")
            self.file.write((text + "\n").encode("utf-8", "replace"))
        except Exception:
            self.handleError(record)


class DaemonLog:
    """The daemon's own log as set up by :func:`setup_logging`; the supervisor owns it."""

    def __init__(self, file: RotatingAppendFile, formatter: RedactingFormatter):
        self.file = file
        self._formatter = formatter

    def set_secret_values(self, values: tuple[str, ...]) -> None:
        """The lane keys in use, so the formatter scrubs them even in a format no pattern knows."""
        self._formatter.secret_values = values


def setup_logging(state_dir: Path, config: Config, level: str = "info") -> DaemonLog:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = RedactingFormatter(_FORMAT)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    file = RotatingAppendFile(
        state_dir / DAEMON_LOG, config.logs.rotate_bytes, config.logs.keep, config.logs.daily
    )
    file_handler = RotatingFileHandler(file)
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("ccmitm").setLevel(level.upper())
    # --log-level debug also lets mitmproxy's own info records through, for debugging sessions.
    logging.getLogger("mitmproxy").setLevel(logging.INFO if level == "debug" else logging.WARNING)
    return DaemonLog(file, formatter)
