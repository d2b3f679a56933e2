"""Lane presets: the upstreams people use, as one data table.

``lanes.<name>.preset: zai`` fills in what that provider needs (URL, key variable, header mode,
provider and the Haiku model a rule rewrites to) so a user writes one line instead of five. A
preset only fills keys the user did not set: anything written in the file wins. The table is
plain data on purpose: adding a region is one entry, not a new branch in the loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

PresetName = Literal["zai", "zai-cn"]
Provider = Literal["anthropic", "zai"]

#: Preset name -> the lane keys it fills in (``default_model`` is for rules, not the lane).
PRESETS: dict[str, dict[str, Any]] = {
    "zai": {
        "url": "https://api.z.ai/api/anthropic",
        "api_key_env": "ZAI_API_KEY",
        "header_mode": "x-api-key",
        "provider": "zai",
        "default_model": "glm-4.5-air",
    },
    "zai-cn": {
        "url": "https://open.bigmodel.cn/api/anthropic",
        "api_key_env": "ZAI_API_KEY",
        "header_mode": "x-api-key",
        "provider": "zai",
        "default_model": "glm-4.5-air",
    },
}

#: Host suffixes that identify a provider when a lane does not name one.
PROVIDER_HOSTS: dict[str, Provider] = {
    "z.ai": "zai",
    "bigmodel.cn": "zai",
    "anthropic.com": "anthropic",
}

_KEY_FIELDS = ("api_key_env", "api_key_file")


def detect_provider(host: str | None) -> Provider | None:
    """The provider a lane URL's host belongs to (``api.z.ai`` -> zai), None when unknown."""
    if not host:
        return None
    host = host.lower().rstrip(".")
    for suffix, provider in PROVIDER_HOSTS.items():
        if host == suffix or host.endswith("." + suffix):
            return provider
    return None


def default_model(preset: str | None) -> str | None:
    entry = PRESETS.get(preset or "")
    return entry.get("default_model") if entry else None


def fill_lane(lane: Mapping[str, Any]) -> dict[str, Any]:
    """A raw lane mapping with its preset's keys filled in where the user set none.

    The key source is filled only when the user named neither ``api_key_env`` nor
    ``api_key_file`` (a user's key file must not gain a second, env-var source). An unknown
    preset is left alone: validation reports it with its path."""
    filled = dict(lane)
    entry = PRESETS.get(str(lane.get("preset")))
    if entry is None:
        return filled
    user_has_key = any(lane.get(key) for key in _KEY_FIELDS)
    for key, value in entry.items():
        if key == "default_model" or key in filled:
            continue
        if key in _KEY_FIELDS and user_has_key:
            continue
        filled[key] = value
    return filled


def apply_presets(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The user's raw config with every lane preset expanded (before the merge over defaults).

    Expanding before the merge matters: the built-in ``zai`` lane already has a URL, and a user's
    ``lanes.zai.preset: zai-cn`` must replace it, which only a key in the user's own data does."""
    data = dict(raw)
    lanes = raw.get("lanes")
    if not isinstance(lanes, Mapping):
        return data
    data["lanes"] = {
        name: fill_lane(lane) if isinstance(lane, Mapping) else lane for name, lane in lanes.items()
    }
    return data


def fill_rule_models(merged: Mapping[str, Any]) -> dict[str, Any]:
    """Rules that name a preset lane and no ``model`` get the preset's default Haiku model.

    Only a rule without a ``model`` key: an explicit ``model: null`` keeps the client's model."""
    data = dict(merged)
    lanes = merged.get("lanes")
    routing = merged.get("routing")
    if not isinstance(lanes, Mapping) or not isinstance(routing, Mapping):
        return data
    rules = routing.get("rules")
    if not isinstance(rules, list):
        return data
    filled_rules: list[Any] = []
    for rule in rules:
        if isinstance(rule, Mapping) and "model" not in rule:
            lane = lanes.get(rule.get("lane"))
            model = default_model(lane.get("preset")) if isinstance(lane, Mapping) else None
            if model is not None:
                rule = {**rule, "model": model}
        filled_rules.append(rule)
    data["routing"] = {**routing, "rules": filled_rules}
    return data
