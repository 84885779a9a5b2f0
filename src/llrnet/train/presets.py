"""Where a configuration comes from: YAML presets, ``extends``, ``key=value`` overrides.
More: docs/training.md, "llrnet.train.presets"."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llrnet.core.coerce import field_types, is_mapping_type
from llrnet.core.errors import UsageError
from llrnet.train.config import FREE_FORM_KEYS, TrainConfig, config_from_dict, config_to_dict

__all__ = [
    "apply_overrides",
    "dump_config",
    "list_presets",
    "load_config",
    "parse_override",
    "preset_values",
]


def _preset_dir() -> Any:
    return resources.files("llrnet") / "configs"


def list_presets() -> list[str]:
    """Names of the presets shipped with llrnet (``llrnet/configs/*.yaml``)."""
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in _preset_dir().iterdir()
        if entry.name.endswith(".yaml")
    )


def load_config(preset: str | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A checked configuration from a preset (name or YAML path) plus ``key=value`` overrides."""
    values = preset_values(preset) if preset else {}
    return config_from_dict(apply_overrides(values, overrides))


def dump_config(config: TrainConfig) -> str:
    """The resolved configuration as YAML text (what ``config.yaml`` of a run holds)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


# --- presets and extends -------------------------------------------------------------------


def preset_values(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw settings of a preset name or a YAML file path, ``extends`` resolved."""
    text, source = _read_preset(name_or_path)
    if name_or_path in _seen:
        raise UsageError(f"presets extend each other in a cycle: {' -> '.join(_seen)}")
    values = _parse_yaml(text, source)
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if not isinstance(parent, str):
        raise UsageError(f"{source}: 'extends' must name a preset, got {parent!r}")
    return _deep_merge(preset_values(parent, (*_seen, name_or_path)), values)


def _read_preset(name_or_path: str) -> tuple[str, str]:
    """``(text, source for messages)`` of a preset name or a YAML file path."""
    path = Path(name_or_path)
    if path.is_dir():
        raise UsageError(f"config {name_or_path} is a folder, not a YAML file")
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {name_or_path}")
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as error:
            raise UsageError(f"config file {path} is not UTF-8 text (byte {error.start}: "
                             f"{error.reason}); save it as UTF-8 YAML") from None
    entry = _preset_dir() / f"{name_or_path}.yaml"
    if not entry.is_file():
        raise UsageError(
            f"unknown preset {name_or_path!r}; choose one of: {', '.join(list_presets())} "
            "(or give a path to a .yaml file)"
        )
    return entry.read_text(encoding="utf-8"), f"preset {name_or_path}"


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{source} is not valid YAML: {error}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{source} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str = ""
                ) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if (isinstance(value, Mapping) and isinstance(merged.get(key), dict)
                and path not in FREE_FORM_KEYS):
            merged[key] = _deep_merge(merged[key], value, path + ".")
        else:
            merged[key] = value
    return merged


# --- overrides -----------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.05"`` -> ``(["optim", "lr"], 0.05)``; the value is a YAML scalar."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"override {text!r} must look like key=value (e.g. optim.lr=0.05)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise UsageError(f"override {text!r}: the value is not valid YAML") from None
    return key.split("."), value


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``values`` with each ``key=value`` of ``overrides`` set (values are checked later)."""
    result: dict[str, Any] = copy.deepcopy(dict(values))
    for text in overrides:
        path, value = parse_override(text)
        _check_override_path(path, text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return result


def _check_override_path(path: list[str], text: str) -> None:
    cls: Any = TrainConfig
    for depth, part in enumerate(path):
        fields = field_types(cls)
        if part not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise UsageError(
                f"override {text!r}: unknown key {part!r} at {where}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
        annotation = fields[part]
        if is_mapping_type(annotation):
            return  # inside a free-form mapping (model.kwargs, task.options): any key
        if dataclasses.is_dataclass(annotation):
            cls = annotation
        elif depth != len(path) - 1:
            raise UsageError(f"override {text!r}: {'.'.join(path[: depth + 1])} has no sub-keys")
