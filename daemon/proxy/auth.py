"""Client authentication: only a client that shows the client token gets to use a lane.

Without it any local process, or another user of a shared machine, could send calls through
ccmitmd and spend the owner's keys. The intercepting listener asks for the token as proxy
credentials (``Proxy-Authorization: Basic base64(any-user:TOKEN)``) on a CONNECT and on plain
proxied requests; the requests inside a tunnel whose CONNECT showed it are authenticated by it.
The reverse listener asks for the ``x-ccmitm-token`` header on every request (its clients already
use ``Authorization`` for their own key, so proxy-style auth does not fit there).

This is a small addon of its own rather than mitmproxy's ``proxyauth``: the refusal must be
written to the usage log like any other call (lane null, reason "unauthenticated"), the token is
swapped while the daemon runs (``ccctl token rotate``), and the reverse listener needs a header of
its own. The Router strips both headers from every forwarded request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import weakref
from collections.abc import Callable

from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from ccmitm.config.clienttoken import HEADER
from ccmitm.core.routing import Reason
from ccmitm.proxy.flow import anthropic_error
from ccmitm.proxy.state import Runtime

Answer = Callable[[http.HTTPFlow, http.Response, Reason, str], None]

REALM = "ccmitm"
NO_TOKEN = "no client token"
WRONG_TOKEN = "wrong client token"
HOW_TO_WIRE = (
    "Wire this shell with "
    '`eval "$(ccctl env)"` (fish: `ccctl env | source`; reverse mode: `ccctl env --reverse`), '
    "or load the shell habits (`ccctl shell init bash|zsh|fish`) and run `ccsub`. "
    "`ccctl token path` shows where the token is kept."
)


def basic_password(value: str | None) -> str | None:
    """The password of a ``Basic`` credential (any user name), or None if there is none."""
    if not value:
        return None
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon else None


def matches(shown: str | None, token: str) -> bool:
    """Does the value the client showed equal the token? Constant time, so the time an answer
    takes says nothing about how much of a guess was right."""
    return shown is not None and hmac.compare_digest(shown.encode(), token.encode())


def proxy_auth_required(why: str) -> http.Response:
    response = http.Response.make(
        407,
        f"ccmitm: {why} (proxy.client_auth is on). {HOW_TO_WIRE}\n".encode(),
        {
            "Proxy-Authenticate": f'Basic realm="{REALM}"',
            "content-type": "text/plain; charset=utf-8",
            "x-ccmitm-error": "authentication_error",
        },
    )
    return response


def unauthorized(why: str) -> http.Response:
    response = anthropic_error(
        401, "authentication_error", f"ccmitm: {why} (proxy.client_auth is on). {HOW_TO_WIRE}"
    )
    # Anthropic's clients honour this header: without it Claude Code retried a wrong token for
    # three minutes before it showed the message; trying again cannot make the token right.
    response.headers["x-should-retry"] = "false"
    return response


class ClientAuth:
    """The addon; it runs before the Router. ``answer`` is ``Router.answer_locally``: a refused
    request gets its usage line there and never reaches a lane."""

    def __init__(self, runtime: Runtime, answer: Answer):
        self.runtime = runtime
        self.answer = answer
        # Client connections whose CONNECT showed a token, and which token: a tunnel opened with a
        # token that has been rotated away since stops working too.
        self._tunnels: weakref.WeakKeyDictionary[connection.Client, str] = weakref.WeakKeyDictionary()

    def _required(self) -> bool:
        return self.runtime.active.config.proxy.client_auth

    def _refuse(self, flow: http.HTTPFlow, response: http.Response, why: str) -> None:
        self.answer(flow, response, Reason.UNAUTHENTICATED, why)

    # --- hooks -----------------------------------------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if not self._required():
            return
        token = self.runtime.client_token
        shown = basic_password(flow.request.headers.get("proxy-authorization"))
        if token is not None and matches(shown, token):
            self._tunnels[flow.client_conn] = token
            return
        self._refuse(flow, proxy_auth_required(_why(shown)), _why(shown))

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not self._required():
            return
        token = self.runtime.client_token
        headers = flow.request.headers
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            shown = headers.get(HEADER)
            if token is None or not matches(shown, token):
                self._refuse(flow, unauthorized(_why(shown)), _why(shown))
            return
        tunnel_token = self._tunnels.get(flow.client_conn)
        if tunnel_token is not None:
            if token is None or not hmac.compare_digest(tunnel_token.encode(), token.encode()):
                self._refuse(flow, unauthorized(WRONG_TOKEN), WRONG_TOKEN)
            return
        if flow.client_conn.tls_established:
            # Inside a tunnel opened while no token was needed: there is nothing to check, and a
            # 407 from inside TLS would puzzle the client, so an Anthropic-shaped 401 says it.
            self._refuse(flow, unauthorized(NO_TOKEN), NO_TOKEN)
            return
        shown = basic_password(headers.get("proxy-authorization"))
        if token is None or not matches(shown, token):
            self._refuse(flow, proxy_auth_required(_why(shown)), _why(shown))


def _why(shown: str | None) -> str:
    return NO_TOKEN if shown is None else WRONG_TOKEN


__all__ = ["ClientAuth", "basic_password", "matches"]
