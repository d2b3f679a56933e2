"""The checks a request must pass before it is routed, and the one framing it leaves with.

A proxy between two parsers is where requests get reinterpreted: a header folded onto the next
line (mitmproxy keeps the continuation inside the previous value, so a filter by name misses the
credential hidden there), an HTTP/2 ``:path`` that becomes an authority once it is pasted after a
host, an HTTP/2 body with no length that an HTTP/1.1 upstream reads as a second request. Each
check here says in plain words what is wrong (never a value the client sent: it may be a key),
and the Router answers such a request itself with a 400 instead of forwarding it.

Pure functions of header fields, paths and bodies, except :func:`set_framing`, which fixes the
framing of a request that is about to be forwarded.
"""

from __future__ import annotations

import re

from mitmproxy import http

HeaderFields = tuple[tuple[bytes, bytes], ...]

# CR and LF end a header line on the way out (a folded header becomes a header of its own on an
# HTTP/1.1 hop); NUL truncates it in C parsers. None of them has a place in a name or a value.
_FORBIDDEN_IN_HEADERS = re.compile(rb"[\r\n\x00]")
# Origin-form only ("/" then visible ASCII): no authority ("//host", "@host"), no scheme, no
# backslash (which some URL parsers read as "/"), no spaces or control bytes.
_ORIGIN_FORM = re.compile(r"/(?!/)[\x21-\x7e]*")
_UNSAFE_IN_PATH = frozenset("@\\")


def header_problem(fields: HeaderFields) -> str | None:
    """Why these header fields must not be forwarded, or None."""
    for name, value in fields:
        if _FORBIDDEN_IN_HEADERS.search(name) or _FORBIDDEN_IN_HEADERS.search(value):
            return "a header name or value contains CR, LF or NUL (folded or injected header)"
    return None


def path_problem(path: str) -> str | None:
    """Why this request target is not a plain origin-form path (``/v1/messages?beta=true``), or None.

    Upstream URLs are built from the lane's scheme, host and port plus this path, so anything that
    could be read as an authority or a scheme is refused rather than interpreted."""
    target = path.partition("?")[0]
    if not _ORIGIN_FORM.fullmatch(path) or _UNSAFE_IN_PATH.intersection(target):
        return "the request target is not an origin-form path (it must start with a single /)"
    return None


def framing_problem(fields: HeaderFields) -> str | None:
    """Why this request's body framing is ambiguous (two ways to find where the body ends), or None.

    mitmproxy's own header validation refuses these too; checking here keeps that promise even if
    its validation were switched off."""
    lengths: set[bytes] = set()
    chunked = False
    for name, value in fields:
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.add(value.strip())
        elif lowered == b"transfer-encoding":
            chunked = True
    if chunked and lengths:
        return "the request has both Content-Length and Transfer-Encoding"
    if len(lengths) > 1:
        return "the request has several different Content-Length values"
    if lengths and not next(iter(lengths)).isdigit():
        return "the request's Content-Length is not a number"
    return None


def head_problem(request: http.Request) -> str | None:
    """Every check that needs only the request head, in one call (the ``requestheaders`` hook)."""
    fields = request.headers.fields
    return header_problem(fields) or path_problem(request.path) or framing_problem(fields)


def body_problem(request: http.Request) -> str | None:
    """Checks that need the whole request (the ``request`` hook): trailers, which no API call uses
    and which mitmproxy cannot forward to an HTTP/1.1 upstream (the call would hang unanswered)."""
    if request.trailers is not None:
        return "the request has trailer fields"
    return None


def set_framing(request: http.Request) -> None:
    """Give a request about to be forwarded exactly one framing: a Content-Length that is its body's.

    The body is whole by now (no request is streamed). An HTTP/2 request needs no Content-Length,
    and mitmproxy forwards its headers as they are onto an HTTP/1.1 hop: without this the upstream
    would read the body as the start of a second request. Headers that are already right are left
    as they are (the default lane gets the client's own bytes)."""
    body = request.raw_content or b""
    fields = request.headers.fields
    wanted = str(len(body)).encode()
    framing = [(name.lower(), value) for name, value in fields if name.lower() in _FRAMING_NAMES]
    if framing == [(b"content-length", wanted)]:
        return
    if not framing and not body and request.method in _BODYLESS_METHODS:
        return  # a GET as it should be: nothing to frame
    # The length takes the place of the first framing header (or goes first), so that the order
    # of everything else is kept: a keyed lane's key stays the last field.
    length = (b"content-length", wanted)
    reframed: list[tuple[bytes, bytes]] = [] if framing else [length]
    for name, value in fields:
        if name.lower() not in _FRAMING_NAMES:
            reframed.append((name, value))
        elif length not in reframed:
            reframed.append(length)
    request.headers.fields = tuple(reframed)


def carries_credential(value: bytes, secrets: frozenset[bytes]) -> bool:
    """Whether a header value holds one of ``secrets`` or anything shaped like an Anthropic key."""
    return _ANTHROPIC_KEY_MARK in value.lower() or any(secret in value for secret in secrets)


# Every Anthropic credential family (API keys, OAuth and admin tokens) starts with this.
_ANTHROPIC_KEY_MARK = b"sk-ant-"
_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding"})
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
