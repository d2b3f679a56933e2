"""What wiring a shell (or one command) to ccmitmd changes in its environment, and how to undo it
exactly. Pure functions over an environment mapping, plus the combined CA bundle file.

The saved state lives in the wired environment itself, so any child (`ccctl env --stock`,
`ccctl run`) can read it: ``_CCMITM_SAVED`` lists the names whose earlier state is recorded, and
``_CCMITM_PREV_<NAME>`` holds the earlier value of each that was set (absent = it was unset, so
unwiring unsets it). Wiring again on top keeps the first record: what "before" means never moves.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from ccmitm import paths
from ccmitm.config.clienttoken import HEADER, USER

if TYPE_CHECKING:
    # Types only: `ccctl env` wires from the daemon's answer without loading the config model.
    from ccmitm.config.model import Config

Mode = Literal["intercept", "reverse"]

SAVED = "_CCMITM_SAVED"
PREV = "_CCMITM_PREV_"
#: Where the guard checks, and how the shell is wired (read by `ccctl run` and the guard).
HOST, PORT, MODE = "_CCMITM_HOST", "_CCMITM_PORT", "_CCMITM_MODE"
#: Set by --subagent: subagents without a model of their own use Haiku (so they are offloaded), and
#: Claude Code sends its request-class headers (x-claude-code-request-class and -agent-type) to a
#: custom ANTHROPIC_BASE_URL too (2.1.x sends them to api.anthropic.com, i.e. through the
#: intercepting listener, by itself), which status and summarize count.
SUBAGENT_VARIABLES = {"CLAUDE_CODE_SUBAGENT_MODEL": "haiku", "CLAUDE_CODE_GATEWAY_HINT_HEADERS": "1"}
BUNDLE_NAME = "ca-bundle.pem"
#: Claude Code sends these header lines (one per line) on every call to ANTHROPIC_BASE_URL.
CUSTOM_HEADERS = "ANTHROPIC_CUSTOM_HEADERS"


@dataclass(frozen=True)
class Listener:
    """What ccmitmd offers a client: the address and the CA of the intercepting listener, and
    the client token it asks for (None with proxy.client_auth off)."""

    host: str
    port: int
    reverse_port: int | None
    ca_cert: Path
    state_dir: Path
    token: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, config: Config, token: str | None = None) -> Listener:
        proxy = config.proxy
        return cls.at(proxy.host, proxy.port, proxy.reverse_port, proxy.confdir, token)

    @classmethod
    def at(
        cls, host: str, port: int, reverse_port: int | None, confdir: str, token: str | None = None
    ) -> Listener:
        """From the proxy.* keys themselves (as the daemon reports them to `ccctl env`)."""
        return cls(
            host=host,
            port=port,
            reverse_port=reverse_port,
            ca_cert=Path(confdir) / "mitmproxy-ca-cert.pem",
            state_dir=paths.state_home(),
            token=token,
        )

    @property
    def proxy_url(self) -> str:
        """HTTPS_PROXY for the intercepting listener, with the token as the proxy password."""
        url = paths.http_url(self.host, self.port)
        if self.token is None:
            return url
        return url.replace("http://", f"http://{USER}:{self.token}@", 1)

    def custom_headers(self, existing: str | None) -> str | None:
        """ANTHROPIC_CUSTOM_HEADERS for the reverse listener: the user's own lines, then the
        token's (None with no token: the user's value stays as it is)."""
        if self.token is None:
            return None
        line = f"{HEADER}: {self.token}"
        return f"{existing}\n{line}" if existing else line


def refresh_bundle(environ: Mapping[str, str], listener: Listener) -> None:
    """In a shell wired to the combined bundle, rebuild it (after a start that made the CA)."""
    if is_wired(environ) and environ.get("NODE_EXTRA_CA_CERTS") == str(listener.state_dir / BUNDLE_NAME):
        targets(original(environ), listener, "intercept", False)


def is_wired(environ: Mapping[str, str]) -> bool:
    return SAVED in environ


def saved_names(environ: Mapping[str, str]) -> list[str]:
    return environ.get(SAVED, "").split()


def original(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment as it was before the wiring (``environ`` itself if it is not wired)."""
    result = {name: value for name, value in environ.items() if not name.startswith("_CCMITM_")}
    for name in saved_names(environ):
        previous = environ.get(PREV + name)
        if previous is None:
            result.pop(name, None)
        else:
            result[name] = previous
    return result


def combined_bundle(user_bundle: Path, ca_cert: Path, state_dir: Path) -> Path:
    """The user's CA bundle plus mitmproxy's CA in one file (0644: it holds public certificates
    only, and other tools of the user read it), rewritten only when either source changed."""
    text = user_bundle.read_text(errors="replace").rstrip("\n") + "\n"
    if ca_cert.exists():
        text += ca_cert.read_text(errors="replace").rstrip("\n") + "\n"
    target = paths.ensure_private_dir(state_dir) / BUNDLE_NAME
    try:
        if target.read_text() == text:
            return target
    except OSError:
        pass
    paths.write_atomic(target, text.encode(), 0o644)
    return target


def _user_bundle(base: Mapping[str, str], listener: Listener) -> Path | None:
    """The user's own NODE_EXTRA_CA_CERTS, when it names a readable file other than ours."""
    value = base.get("NODE_EXTRA_CA_CERTS")
    if not value:
        return None
    path = Path(value)
    try:
        if path == listener.ca_cert or not os.access(path, os.R_OK) or not path.is_file():
            return None
    except (OSError, ValueError):  # not a path this system can even look up
        return None
    return path


def targets(base: Mapping[str, str], listener: Listener, mode: Mode, subagent: bool) -> dict[str, str | None]:
    """The variables a wiring sets (a value) or unsets (None), given the original environment.
    Writes the combined CA bundle when the user has a bundle of their own (intercepting mode)."""
    extra: dict[str, str | None] = dict(SUBAGENT_VARIABLES) if subagent else {}
    if mode == "reverse":
        if listener.reverse_port is None:
            raise ValueError("the reverse listener is off (proxy.reverse_port: null)")
        # HTTPS_PROXY and NODE_EXTRA_CA_CERTS stay as the user had them: the reverse listener is
        # plain http on loopback (HTTPS_PROXY does not apply to it), and the shell's other HTTPS
        # traffic keeps going through the user's own proxy, if any.
        headers = listener.custom_headers(base.get(CUSTOM_HEADERS))
        token: dict[str, str | None] = {CUSTOM_HEADERS: headers} if headers is not None else {}
        return {"ANTHROPIC_BASE_URL": paths.http_url(listener.host, listener.reverse_port), **token, **extra}
    user_bundle = _user_bundle(base, listener)
    ca = listener.ca_cert
    if user_bundle is not None:
        # Gone or unreadable since the check: wire with ccmitm's CA alone.
        with contextlib.suppress(OSError):
            ca = combined_bundle(user_bundle, listener.ca_cert, listener.state_dir)
    return {
        "HTTPS_PROXY": listener.proxy_url,
        "NODE_EXTRA_CA_CERTS": str(ca),
        "ANTHROPIC_BASE_URL": None,
        **extra,
    }


def wire(environ: Mapping[str, str], listener: Listener, mode: Mode, subagent: bool) -> dict[str, str | None]:
    """Every change that wires ``environ``: the wiring variables, the record of their earlier
    state, and where the guard checks. Wiring a wired environment re-wires from the original."""
    base = original(environ)
    wanted = targets(base, listener, mode, subagent)
    names = list(dict.fromkeys([*saved_names(environ), *wanted]))
    changes: dict[str, str | None] = {}
    for name in names:
        changes[name] = wanted[name] if name in wanted else base.get(name)
    for name in names:
        changes[PREV + name] = base.get(name)
    port = listener.port if mode == "intercept" else listener.reverse_port
    changes.update({SAVED: " ".join(names), HOST: listener.host, PORT: str(port), MODE: mode})
    return changes


def unwire(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Every change that restores the original environment: the saved variables get their earlier
    values back (unset if they were unset), and ccmitm's own state variables go."""
    base = original(environ)
    changes: dict[str, str | None] = {name: base.get(name) for name in saved_names(environ)}
    changes.update(dict.fromkeys(sorted(name for name in environ if name.startswith("_CCMITM_"))))
    return changes


@dataclass(frozen=True)
class Ref:
    """The value of another variable, as the shell that evaluates the lines has it, followed by
    ``suffix`` (lines added to the user's own value, e.g. ANTHROPIC_CUSTOM_HEADERS)."""

    name: str
    suffix: str = ""


def symbolic(environ: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str | Ref | None]:
    """The same changes for printing: every value the user had is replaced by a reference to the
    variable holding it (``_CCMITM_PREV_X="$X"`` to save, ``X="$_CCMITM_PREV_X"`` to restore), so
    ccctl never prints a value of the user's (a proxy URL may hold a password). The record comes
    first, while the variables still hold what the user had; a record already there is kept."""
    base = original(environ)
    already = set(saved_names(environ))
    result: dict[str, str | Ref | None] = {}
    for key, value in changes.items():
        if key.startswith(PREV) and key[len(PREV) :] not in already:
            result[key] = Ref(key[len(PREV) :]) if value is not None else None
    for key, value in changes.items():
        if key.startswith(PREV):
            if key[len(PREV) :] in already and value is None and key in environ:
                result[key] = None  # (unwire) the record goes
            continue
        before = base.get(key)
        users = not key.startswith("_CCMITM_") and value is not None and before is not None
        if users and value == before:
            result[key] = Ref(PREV + key)
        elif users and before and value and value.startswith(before + "\n"):
            # The user's value with lines of ours after it: theirs by reference, ours printed.
            result[key] = Ref(PREV + key, value[len(before) :])
        else:
            result[key] = value
    return result


def apply(environ: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    result = dict(environ)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def previous_proxy(base: Mapping[str, str], listener: Listener) -> str | None:
    """The user's own HTTPS proxy (credentials removed for display), if it is not ccmitmd."""
    value = base.get("HTTPS_PROXY") or base.get("https_proxy")
    if not value:
        return None
    parts = urlsplit(value if "://" in value else "http://" + value)
    if parts.hostname in (listener.host, "127.0.0.1", "localhost") and parts.port in (
        listener.port,
        listener.reverse_port,
    ):
        return None
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}"
