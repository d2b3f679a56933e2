"""The client token file: made once (0600), read back, repaired, rotated."""

from __future__ import annotations

import stat
from pathlib import Path

from ccmitm.config.clienttoken import ensure_token, read_token, rotate_token, token_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_call_makes_a_private_token_and_later_calls_read_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "client-token"
    token = ensure_token(path)
    assert len(token) >= 40 and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert ensure_token(path) == token == read_token(path)
    assert [p.name for p in path.parent.iterdir()] == ["client-token"]  # no temp file left


def test_rotate_replaces_the_token(tmp_path: Path) -> None:
    path = tmp_path / "client-token"
    old = ensure_token(path)
    new = rotate_token(path)
    assert new != old and read_token(path) == new and mode(path) == 0o600


def test_an_unusable_file_is_replaced_and_a_readable_one_made_private(tmp_path: Path) -> None:
    path = tmp_path / "client-token"
    path.write_text("a b\n")
    assert read_token(path) is None
    token = ensure_token(path)
    assert token != "a b" and read_token(path) == token
    path.chmod(0o644)
    assert read_token(path) == token and mode(path) == 0o600


def test_the_path_is_in_the_state_dir() -> None:
    assert token_path({"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/ccmitm/client-token")
