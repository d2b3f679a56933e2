"""Edit one value of config.yaml in place, keeping the user's comments and layout.

A round-trip YAML parser (ruamel.yaml, already a mitmproxy dependency) changes just the one node;
the result is validated as a whole before it replaces the file (atomically), so an edit can never
leave a file the daemon would reject.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from ccmitm import paths
from ccmitm.config.errors import ConfigError, Problem
from ccmitm.config.load import validate


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it: true, 8082, null, x-api-key."""
    return yaml.safe_load(text) if text.strip() else ""


def set_value(path: Path, dotted_key: str, value: Any) -> None:
    """Set ``dotted_key`` (e.g. ``lanes.zai.header_mode``) to ``value`` in the file at ``path``."""
    keys = dotted_key.split(".")
    if not all(keys):
        raise ConfigError(str(path), [Problem(dotted_key, "not a key path like proxy.http2")])
    round_trip = YAML()
    round_trip.preserve_quotes = True
    document = round_trip.load(path.read_text(encoding="utf-8")) if path.exists() else None
    if document is None:
        document = round_trip.load("{}")
    node = document
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    text = buffer.getvalue()
    validate(yaml.safe_load(text), str(path))  # raises ConfigError with every problem
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The file keeps its mode; a new one is the user's alone.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    paths.write_atomic(path, text.encode("utf-8"), mode)
