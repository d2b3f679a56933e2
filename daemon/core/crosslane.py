"""Cross-lane conversations: remove the offload lane's thinking blocks before a request goes to
Anthropic.

A conversation that had turns on the offload lane (GLM on Z.AI) and then moves to Anthropic (the
kill-switch, an open breaker, a failover) still carries that lane's ``thinking`` blocks in its
assistant messages. Anthropic checks every thinking block's signature and rejects the whole
request (400 "Invalid signature in thinking block") when it did not make it. So, on the way to
Anthropic only, the addon removes exactly those blocks:

- ``thinking`` / ``redacted_thinking`` blocks in assistant messages whose signature (for
  ``redacted_thinking``: its ``data``) is in the registry of signatures seen in offload-lane
  responses (:class:`SignatureRegistry`, fed from ``Usage.signatures``);
- thinking blocks with a missing or empty signature: Anthropic rejects those in any case, and it
  is what a lane that does not sign its blocks sends back.

Everything else is left exactly as it was: other messages, other blocks, Anthropic-signed thinking
blocks (the same objects, not copies), the order of blocks.

Decisions, and why:

- **Remove, not convert to text.** Anthropic drops earlier turns' thinking from the context
  anyway, so removing loses nothing the model would have seen; turning GLM's reasoning into a
  text block would instead put it in Claude's mouth as something it said, and cost tokens.
- **A message that would become empty** (it held only foreign thinking; content must be
  non-empty): in the final position it is dropped, so the request ends on the user's turn
  instead of a meaningless prefill; elsewhere its content becomes one short text block
  (:data:`PLACEHOLDER_TEXT`, not whitespace: Anthropic rejects empty and whitespace-only text
  blocks) so the user/assistant alternation and any tool_use/tool_result pairing stay intact.
- **Thinking switched off when it must be.** With ``thinking`` enabled, Anthropic requires the
  final assistant message of an unfinished tool-use turn to start with a thinking block
  ("Expected `thinking` or `redacted_thinking`, but found `tool_use`"). If removing a foreign
  block broke that, no valid signature can be made up, so the request's ``thinking`` parameter is
  removed (what LiteLLM does with ``modify_params``), together with ``clear_thinking_*`` context
  edits that require thinking. This happens only when a block was removed from that message.

No I/O here. :func:`strip_foreign_thinking` edits the parsed body in place and reports what it
did; the caller re-serialises the body only when something changed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
PLACEHOLDER_TEXT = "[reasoning from another model omitted]"
_DIGEST_BYTES = 16  # 128 bits: collisions are not a concern at a few thousand entries


def signature_digest(signature: str) -> bytes:
    """The registry's key for a signature: a truncated SHA-256, so raw signatures are not kept."""
    # surrogatepass: a hostile body can carry lone surrogates; hashing must not raise on them.
    return hashlib.sha256(signature.encode("utf-8", "surrogatepass")).digest()[:_DIGEST_BYTES]


class SignatureRegistry:
    """A bounded, least-recently-used set of signature digests from offload-lane responses.

    Memory: at most ``max_entries`` digests (about 100 bytes each with the dict overhead). A
    conversation's blocks are looked up on every request of that conversation, which keeps the
    ones still in use fresh; the oldest unused ones fall out.
    """

    def __init__(self, max_entries: int = 8192):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._digests: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, signature: str) -> bool:
        """Remember a signature the offload lane produced. False for an empty one (nothing to add)."""
        if not isinstance(signature, str) or not signature:
            return False
        self._add_digest(signature_digest(signature))
        return True

    def add_all(self, signatures: Iterable[str]) -> int:
        return sum(1 for signature in signatures if self.add(signature))

    def _add_digest(self, digest: bytes) -> None:
        self._digests[digest] = None
        self._digests.move_to_end(digest)
        while len(self._digests) > self.max_entries:
            self._digests.popitem(last=False)

    def is_foreign(self, signature: str) -> bool:
        """Was this signature made by the offload lane? A hit counts as a use (LRU refresh)."""
        digest = signature_digest(signature)
        if digest in self._digests:
            self._digests.move_to_end(digest)
            return True
        return False

    __contains__ = is_foreign  # type: ignore[assignment]

    # Persisting across restarts is the caller's business; these give and take plain data.
    def export(self) -> list[str]:
        """The digests as hex strings, oldest first."""
        return [digest.hex() for digest in self._digests]

    def load(self, digests: Iterable[str]) -> int:
        """Add hex digests from :meth:`export`; malformed entries are skipped. Returns how many."""
        added = 0
        for text in digests:
            try:
                digest = bytes.fromhex(text) if isinstance(text, str) else b""
            except ValueError:
                continue
            if len(digest) == _DIGEST_BYTES:
                self._add_digest(digest)
                added += 1
        return added


@dataclass(frozen=True)
class StripResult:
    """What :func:`strip_foreign_thinking` changed (all zero/False: the body is untouched)."""

    blocks: int = 0  # thinking blocks removed
    messages: int = 0  # assistant messages whose content changed (dropped ones included)
    placeholders: int = 0  # messages that would have been empty and got PLACEHOLDER_TEXT
    dropped_messages: int = 0  # a final assistant message that held only foreign thinking
    thinking_disabled: bool = False  # the request's ``thinking`` parameter had to be removed

    @property
    def changed(self) -> bool:
        return self.blocks > 0 or self.thinking_disabled

    def __bool__(self) -> bool:
        return self.changed

    def as_dict(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "messages": self.messages,
            "placeholders": self.placeholders,
            "dropped_messages": self.dropped_messages,
            "thinking_disabled": self.thinking_disabled,
        }


def block_signature(block: dict[str, Any]) -> str | None:
    """A thinking block's signature (``data`` for redacted_thinking); None if missing or empty."""
    value = block.get("data") if block.get("type") == "redacted_thinking" else block.get("signature")
    return value if isinstance(value, str) and value else None


def is_foreign_block(block: Any, is_foreign: Callable[[str], bool]) -> bool:
    """Must this content block go before the request is sent to Anthropic?"""
    if not isinstance(block, dict) or block.get("type") not in THINKING_TYPES:
        return False
    signature = block_signature(block)
    return signature is None or is_foreign(signature)


def _starts_with_thinking(content: Any) -> bool:
    return (
        isinstance(content, list)
        and bool(content)
        and isinstance(content[0], dict)
        and content[0].get("type") in THINKING_TYPES
    )


def _has_tool_result(message: Any) -> bool:
    if not isinstance(message, dict) or message.get("role") != "user":
        return False
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )


def _thinking_enabled(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")


def _disable_thinking(body: dict[str, Any]) -> None:
    body.pop("thinking", None)
    management = body.get("context_management")
    if not isinstance(management, dict) or not isinstance(management.get("edits"), list):
        return
    edits = [
        edit
        for edit in management["edits"]
        if not (isinstance(edit, dict) and str(edit.get("type", "")).startswith("clear_thinking"))
    ]
    if len(edits) == len(management["edits"]):
        return
    if edits:
        management["edits"] = edits
    else:
        del management["edits"]
        if not management:
            del body["context_management"]


def strip_foreign_thinking(body: Any, is_foreign: Callable[[str], bool]) -> StripResult:
    """Remove foreign thinking blocks from the assistant messages of a parsed Messages request.

    ``is_foreign(signature)`` says whether a non-empty signature came from the offload lane
    (normally ``registry.is_foreign``; ``lambda _: True`` removes every thinking block). Blocks
    without a signature are always removed. The body is edited in place; a body that is not a
    Messages request (no ``messages`` list) is left alone.
    """
    if not isinstance(body, dict):
        return StripResult()
    messages = body.get("messages")
    if not isinstance(messages, list):
        return StripResult()

    blocks = changed_messages = placeholders = 0
    changed_indexes: set[int] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue  # a plain string has no blocks
        kept = [block for block in content if not is_foreign_block(block, is_foreign)]
        removed = len(content) - len(kept)
        if not removed:
            continue
        blocks += removed
        changed_messages += 1
        changed_indexes.add(index)
        if not kept and index != len(messages) - 1:
            kept = [{"type": "text", "text": PLACEHOLDER_TEXT}]
            placeholders += 1
        message["content"] = kept  # a new list: kept blocks are the very same objects

    if not blocks:
        return StripResult()

    dropped = 0
    last = messages[-1]
    if (
        isinstance(last, dict)
        and last.get("role") == "assistant"
        and len(messages) - 1 in changed_indexes
        and last.get("content") == []
    ):
        messages.pop()
        changed_indexes.discard(len(messages))
        dropped = 1

    thinking_disabled = False
    if _thinking_enabled(body):
        turn = _last_assistant_of_open_turn(messages)
        if (
            turn is not None
            and turn in changed_indexes
            and not _starts_with_thinking(messages[turn]["content"])
        ):
            _disable_thinking(body)
            thinking_disabled = True

    return StripResult(blocks, changed_messages, placeholders, dropped, thinking_disabled)


def _last_assistant_of_open_turn(messages: list[Any]) -> int | None:
    """The index of the last assistant message if the assistant's turn is still open (only
    tool_result user messages follow it, or it is the final message); else None."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "assistant":
            return index
        if not _has_tool_result(message):
            return None
    return None


__all__ = [
    "PLACEHOLDER_TEXT",
    "THINKING_TYPES",
    "SignatureRegistry",
    "StripResult",
    "block_signature",
    "is_foreign_block",
    "signature_digest",
    "strip_foreign_thinking",
]
