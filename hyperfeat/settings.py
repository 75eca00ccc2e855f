"""Settings dataclasses and the config blocks that fill them.

A settings dataclass is the one home of its defaults: the YAML block it reads (``train.walk_*``,
``eval``, ...) states the same values (``tests/test_settings.py`` checks keys and values for every
pair of its ``SETTINGS_BLOCKS`` table), and the code reads the block through :func:`from_block`
instead of restating a default with ``block.get(key, fallback)``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional, TypeVar

from omegaconf import OmegaConf

from hyperfeat.errors import ConfigError

T = TypeVar("T")


def plain(value: Any) -> Any:
    """A config node as plain Python (lists, dicts), anything else as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """``value`` as the field type ``kind`` (int, float, bool, str, tuple[...] and Optional of these)."""
    if value is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value) if args else tuple(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
        return value
    if kind in (int, float, str):
        if kind in (int, float) and isinstance(value, bool):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {kind.__name__}; got {value!r}") from None
    return value


def from_block(cls: type[T], block: Any, prefix: str = "", where: Optional[str] = None) -> T:
    """``cls`` filled from the config ``block``'s keys ``prefix + field``: a key the block lacks
    takes the dataclass default (the one place defaults live), a present one is cast to the field's
    type with one line naming ``where.key`` when it cannot be."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if block is not None and key in block:
            values[f.name] = _coerce(plain(block[key]), hints[f.name], f"{where or 'config'}.{key}")
    return cls(**values)


def defaults_of(cls: type) -> dict[str, Any]:
    """Field name → default of a settings dataclass (fields without one are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out
