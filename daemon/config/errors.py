"""What is wrong with a config, and the one way it is shown.

Kept apart from the schema so that a command that only reports a config error (or the control
client) does not pay for importing pydantic. A problem names the key path and never the value:
the value could be a secret pasted into the wrong key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    path: str  # e.g. "routing.rules[0].lane"; empty for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The file is not a valid config. ``problems`` lists every error found, each with its path."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``<source>: <problem>; <problem>``: for the daemon log and ``ccctl status``."""
        return f"{self.source}: " + "; ".join(map(str, self.problems))

    def report(self) -> str:
        """The multi-line form every command prints: a headline, then one indented problem a line."""
        count = len(self.problems)
        lines = [f"{self.source}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


class ConfigMissing(ConfigError):
    """There is no file at the config path (a dangling symlink is not "missing": it is an error).

    At a first start that means the built-in defaults; for a running daemon it means keep serving."""

    def __init__(self, source: str):
        super().__init__(source, [Problem("", "config file missing")])
