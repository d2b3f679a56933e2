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


def test_a_fifo_in_place_of_the_token_is_an_error_not_a_hang(tmp_path: Path) -> None:
    import os

    import pytest

    from ccmitm.config.clienttoken import TokenError

    path = tmp_path / "client-token"
    os.mkfifo(path, 0o600)
    with pytest.raises(TokenError, match="cannot read the client token file"):
        read_token(path)  # a plain read would wait for a writer forever


def test_a_fifo_in_place_of_a_lane_key_file_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    import os

    from ccmitm.config.keys import resolve_lane_key
    from ccmitm.config.load import validate

    key_file = tmp_path / "zai.key"
    os.mkfifo(key_file, 0o600)
    config = validate({"lanes": {"zai": {"api_key_env": "NOT_SET_ANYWHERE", "api_key_file": str(key_file)}}})
    key = resolve_lane_key(config.lanes["zai"], {})
    assert key is not None and key.value is None
    assert key.problem is not None and "cannot read" in key.problem
