"""Config files of the recipes: values checked and converted by the dataclass field types before anything loads.

PyYAML reads ``learning_rate: 1e-4`` as the string ``"1e-4"`` (YAML 1.1 floats need a dot), and
``HfArgumentParser.parse_dict`` passes values through unchecked, so a wrong type used to fail deep in torch
after the model had loaded. :func:`typed_config` converts what converts unambiguously (``"1e-4"`` → ``1e-4``,
``"10"`` → ``10``, ``"true"`` → ``True``) and names the key, the value and the expected type otherwise.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _convert(value: Any, target: type) -> Any:
    """``value`` as ``target`` (bool, int, float or str), or raise ``ValueError``."""
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            number = float(value)
            if number.is_integer():
                return int(number)
    elif target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value)
    elif target is str and isinstance(value, str | int | float | bool):
        return str(value)
    raise ValueError(value)


def _typed_value(key: str, value: Any, annotation: Any, source: str) -> Any:
    members = _members(annotation)
    if value is None and type(None) in members:
        return None
    simple = [m for m in members if m in _NAMES]
    if len(simple) < len([m for m in members if m is not type(None)]):
        return value  # an enum, dict or list field: HfArgumentParser's own checks apply
    if any(type(value) is m or (m is float and type(value) is int) for m in simple):
        return float(value) if simple == [float] else value
    for target in simple:
        try:
            return _convert(value, target)
        except (ValueError, OverflowError):
            continue
    expected = " or ".join(_NAMES[m] for m in simple) + (" or null" if type(None) in members else "")
    raise ValueError(f"{source}: key {key!r} has value {value!r} ({type(value).__name__}); expected {expected}.")


def typed_config(config: Mapping[str, Any], dataclass_types: Sequence[type], source: str) -> dict[str, Any]:
    """``config`` with each value converted to its field's type (bool, int, float, str, optionally ``None``).

    Keys that name no field are left for ``HfArgumentParser`` to report; fields of other types (enums, dicts,
    lists) are passed through.
    """
    hints: dict[str, Any] = {}
    for dtype in dataclass_types:
        type_hints = typing.get_type_hints(dtype)
        hints.update({f.name: type_hints[f.name] for f in dataclasses.fields(dtype) if f.init})
    return {key: _typed_value(key, value, hints[key], source) if key in hints else value
            for key, value in config.items()}


def command_line_overrides(argv: Sequence[str], source: str) -> dict[str, str]:
    """``["--key", "value", "--other=value"]`` (what follows a config file on a command line) as a dict."""
    overrides: dict[str, str] = {}
    items = list(argv)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or len(item) == 2:
            raise ValueError(f"After the config file {source}, expected --key value pairs, got {item!r}.")
        key, has_value, value = item[2:].partition("=")
        if not has_value:
            if not items or items[0].startswith("--"):
                raise ValueError(f"After the config file {source}: --{key} needs a value.")
            value = items.pop(0)
        overrides[key] = value
    return overrides
