"""docs/CONFIG.md and etc/config.yaml are the generator's output, and the generator covers every key of the schema."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel, Field

from ccmitm.config import doc as configdoc
from ccmitm.config.load import validate
from ccmitm.config.model import Config, ProxyConfig, builtin_defaults
from tests.helpers import REPO_ROOT

CONFIG_MD = REPO_ROOT / "docs" / "CONFIG.md"
EXAMPLE = REPO_ROOT / "etc" / "config.yaml"


def model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key path of the model, found independently of the generator's own walk."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        path = prefix + name
        found.add(path)
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= model_paths(annotation, path + ".")
        elif args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            item = path + (
                "[]"
                if getattr(annotation, "__origin__", None) is list
                else ".<glob>"
                if name == "pricing"
                else ".<name>"
            )
            if not item.endswith("[]"):
                found.add(item)
            found |= model_paths(args[-1], item + ".")
    return found


def test_config_md_is_current() -> None:
    assert CONFIG_MD.read_text() == configdoc.render(), "docs/CONFIG.md is stale: run `make docs`"


def test_example_config_is_current_and_means_the_defaults() -> None:
    assert EXAMPLE.read_text() == configdoc.render_example(), "etc/config.yaml is stale: run `make docs`"
    assert validate(yaml.safe_load(EXAMPLE.read_text())) == validate({})


def test_every_key_of_the_model_is_documented_and_nothing_else() -> None:
    paths = model_paths(Config)
    assert {key.path for key in configdoc.walk()} == paths
    assert all(key.description for key in configdoc.walk())
    text = CONFIG_MD.read_text()
    for path in paths - {
        "proxy",
        "routing",
        "lanes",
        "breaker",
        "logs",
        "bundle",
        "pricing",
        "control",
        "wiring",
        "metrics",
        "telemetry",
    }:
        assert f"| `{path}` |" in text, path


def test_defaults_in_the_reference_are_the_builtin_ones() -> None:
    keys = {key.path: key for key in configdoc.walk()}
    builtin = builtin_defaults()
    for section, values in builtin.items():
        if not isinstance(values, dict) or section in ("lanes", "pricing"):
            continue
        for name, value in values.items():
            shown = keys[f"{section}.{name}"].default
            if section == "routing" and name == "rules":
                assert validate({"routing": {"rules": shown}}) == validate({})  # shown without defaults
                continue
            assert shown == value, (section, name)
            assert f"`{configdoc.json_value(value)}`" in CONFIG_MD.read_text(), (section, name)
    # And the commented example file names every section and key the reference does.
    example = yaml.safe_load(EXAMPLE.read_text())
    assert set(example) == set(builtin)
    for section in ("proxy", "breaker", "logs", "bundle"):
        assert set(example[section]) == {k.split(".")[1] for k in keys if k.startswith(section + ".")}


def test_a_new_key_without_a_description_fails_the_generator() -> None:
    class Extended(ProxyConfig):
        brand_new: int = 1

    class Grown(BaseModel):  # the config after someone adds a key and forgets its description
        proxy: Extended = Field(default_factory=Extended, description="The listeners.")

    with pytest.raises(KeyError, match=r"proxy\.brand_new"):
        list(configdoc.walk(Grown))
