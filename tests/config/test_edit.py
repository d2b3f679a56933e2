"""`ccctl config set`: values typed by the schema, list items, comments kept, nothing written on error.

The property test feeds random keys and values through the real command (in process) and asserts
the two promises that matter for any input: no traceback (exit 0 or 1, a short message), and a
failed set leaves the file byte for byte as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccmitm.cli.main import main
from ccmitm.config.edit import key_paths, parse_key, resolve, set_value, value_at
from ccmitm.config.errors import ConfigError
from ccmitm.config.load import check_file, read_file

ORIGINAL = """\
# my ccmitm config
proxy:
  port: 8082        # the intercepting listener
  # HTTP/2 on or off
  http2: true
bundle:
  schedule: "30 2 * * *"   # nightly
routing:
  rules:
    - match: "*haiku*"   # Haiku to Z.AI
      lane: zai
      model: glm-4.5-air
"""


# Spelled the way people write YAML, not the way ruamel writes it: every line of it must survive.
ODD = """\
---
# top comment

proxy:
    port:    8082      # spaced
    http2: True
    intercept_hosts: [api.anthropic.com]
    reverse_port: ~

routing:
    rules:
        -   match: "*haiku*"
            lane: zai
bundle:
    prefix: review
# end comment
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL)
    path.chmod(0o640)
    return path


def ccctl(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(path), *args], catch_exceptions=True)


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("bundle.schedule", "*/5 * * * *", "*/5 * * * *"),  # was a yaml ScannerError (an alias)
        ("routing.rules[0].match", "*sonnet*", "*sonnet*"),  # was "unknown key"
        ("routing.rules[0].model", "@foo", "@foo"),
        ("routing.rules[0].model", "null", None),
        ("proxy.confdir", "yes", "yes"),  # text stays text, even what YAML 1.1 calls a boolean
        ("bundle.prefix", "1_000", "1_000"),
        ("bundle.timezone", "Europe/Berlin", "Europe/Berlin"),
        ("proxy.port", " 9000 ", 9000),
        ("proxy.http2", "off", False),
        ("proxy.http2", "YES", True),
        ("proxy.http2", "0", False),
        ("breaker.window_s", "2.5", 2.5),
        ("proxy.intercept_hosts", "[api.anthropic.com, example.com]", ["api.anthropic.com", "example.com"]),
    ],
)
def test_a_value_is_typed_by_the_schema_of_its_key(
    config_file: Path, key: str, text: str, expected: object
) -> None:
    assert set_value(config_file, key, text) == expected
    data = yaml.safe_load(config_file.read_text())
    node: object = data
    for part in key.replace("[0]", ".0").split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    assert node == expected
    assert check_file(config_file) is None


def test_untouched_lines_and_comments_are_kept(config_file: Path) -> None:
    set_value(config_file, "bundle.schedule", "*/5 * * * *")
    lines = config_file.read_text().splitlines()
    before = ORIGINAL.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before, lines, strict=True)) if a != b]
    assert changed == [before.index('  schedule: "30 2 * * *"   # nightly')]
    assert lines[changed[0]].endswith("# nightly")
    assert config_file.stat().st_mode & 0o777 == 0o640  # the file keeps its mode


def test_a_file_in_its_own_spelling_keeps_every_untouched_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(ODD)
    set_value(path, "proxy.port", "9000")
    set_value(path, "bundle.schedule", "*/5 * * * *")
    before, after = ODD.splitlines(), path.read_text().splitlines()
    assert after[4] == "    port: 9000         # spaced"
    assert after[:4] + after[5:-1] == before[:4] + before[5:]  # everything else as it was ...
    assert after[-1] == "    schedule: '*/5 * * * *'"  # ... plus the new key (after the comment ruamel
    # gives to the section's last key)
    set_value(path, "routing.rules[+]", "{match: '*opus*', lane: zai}")
    assert read_file(path).routing.rules[1].match == "*opus*"
    assert '        -   match: "*haiku*"' in path.read_text()


def test_list_items_append_and_new_entries(config_file: Path) -> None:
    set_value(config_file, "routing.rules[+]", '{match: "*opus*", lane: zai}')
    set_value(config_file, "lanes.myname.url", "https://example.com/api")
    set_value(config_file, "routing.rules[1].lane", "myname")
    set_value(config_file, "proxy.intercept_hosts[+]", "example.com")  # a list the file lacks
    config = read_file(config_file)
    assert [(r.match, r.lane) for r in config.routing.rules] == [("*haiku*", "zai"), ("*opus*", "myname")]
    assert config.lanes["myname"].url == "https://example.com/api"
    assert "zai" in config.lanes  # a new entry merges with the built-in lanes
    assert config.proxy.intercept_hosts == ["api.anthropic.com", "example.com"]  # from the effective list
    assert "# Haiku to Z.AI" in config_file.read_text()


def test_a_missing_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.yaml"
    set_value(path, "routing.rules[0].match", "*haiku-4*")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_file(path).routing.rules[0].model == "glm-4.5-air"  # the rest of the default rule


@pytest.mark.parametrize(
    ("key", "text", "path", "message"),
    [
        ("proxy.port", "abc", "proxy.port", "expects an integer"),
        ("proxy.port", "null", "proxy.port", "expects an integer"),  # null only where None is allowed
        ("proxy.port", "0", "proxy.port", "greater than or equal to 1"),
        ("proxy.http2", "maybe", "proxy.http2", "true or false"),
        ("proxy.nope", "1", "proxy.nope", "unknown key"),
        ("proxy.port.x", "1", "proxy.port.x", "not a section"),
        ("routing.rules[3].match", "x", "routing.rules[3]", "no such item"),
        ("routing.rules[+].match", "x", "routing.rules[+].match", "must end the key"),
        ("proxy[0]", "x", "proxy[0]", "not a list"),
        ("routing.rules[+]", "[1, 2]", "routing.rules[+]", "expects a section"),
        ("routing.rules[+]", "{match: x, lane: nowhere}", "routing.rules[1].lane", "unknown lane"),
        ("routing.rules", "{a: [", "routing.rules", "not valid YAML"),
        ("a..b", "1", "a..b", "not a key path"),
    ],
)
def test_errors_name_their_path_and_write_nothing(
    config_file: Path, key: str, text: str, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        set_value(config_file, key, text)
    assert any(p.path == path and message in p.message for p in info.value.problems), info.value.report()
    assert config_file.read_text() == ORIGINAL


@pytest.mark.parametrize(
    "original",
    [
        "routing:\n  rules: &r [*r]\n",  # an alias to its own anchor
        "proxy: [unclosed\n",  # not YAML
        "- a list\n",  # not a mapping
        "proxy:\n  port: 1\n  port: 2\n",  # a duplicate key
    ],
)
def test_a_broken_file_is_reported_and_left_alone(tmp_path: Path, original: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(original)
    result = ccctl(path, "config", "set", "proxy.http2", "false")
    assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None))), result.exception
    assert result.stderr.startswith("ccctl: not changed:") and path.read_text() == original


def test_the_command_never_echoes_a_text_value(config_file: Path) -> None:
    secret = "sk-ant-api03-" + "S" * 40
    result = ccctl(config_file, "config", "set", "lanes.zai.api_key_env", secret)
    assert result.exit_code == 1
    assert "lanes.zai.api_key_env" in result.stderr and secret not in result.output + result.stderr
    ok = ccctl(config_file, "config", "set", "bundle.prefix", "my-review")
    assert ok.exit_code == 0 and "my-review" not in ok.output
    assert ccctl(config_file, "config", "set", "proxy.http2", "no").output.endswith(
        "proxy.http2 set = false\n"
    )


KEYS = [*sorted(set(key_paths())), "lanes.new.url", "pricing.*haiku*.input_per_mtok", "routing.rules[9]"]
VALUES = [
    "*/5 * * * *",
    "*haiku*",
    "@foo",
    "null",
    "~",
    "yes",
    "0",
    "-1",
    "1e400",
    "nan",
    "[a, b]",
    "{match: '*opus*', lane: zai}",
    "{a: *b}",
    "&a [*a]",
    "!!binary aGk=",
    "2024-01-01",
    "'",
    '"',
    "https://example.com",
    "x" * 300,
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    original=st.sampled_from([ORIGINAL, ODD]),
    key=st.one_of(
        st.sampled_from(KEYS),
        st.builds(
            str.__add__, st.sampled_from(KEYS), st.sampled_from(["[0]", "[+]", ".x", "[99]", ".", "[-1]"])
        ),
        st.text(max_size=40),
    ),
    value=st.one_of(st.sampled_from(VALUES), st.text(max_size=60)),
)
def test_any_key_and_value_exits_cleanly(tmp_path: Path, original: str, key: str, value: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(original)
    result = ccctl(path, "config", "set", "--", key, value)
    assert result.exit_code in (0, 1), (key, value, result.exception, result.output, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), (key, value)
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 0:
        assert check_file(path) is None  # whatever was written is a valid config
        parsed = parse_key(key)
        slot = resolve(parsed)
        if slot.kind == "str" and not (slot.nullable and value.strip() == "null"):
            # a text key holds exactly the text given
            assert value_at(yaml.safe_load(path.read_text()), parsed) == value
    else:
        assert path.read_bytes() == original.encode()  # byte-identical: nothing written
        assert result.stderr.startswith("ccctl: not changed:") and len(result.stderr.splitlines()) <= 12
