"""Plain data (YAML / JSON mappings) <-> frozen dataclasses: the one validator of configs.

`build_dataclass(cls, raw, where)` builds `cls` from a mapping, field by field, following
its annotations: nested dataclasses are built recursively; ints, floats, bools, strings,
Literals, tuples and optionals are checked; a union of dataclasses annotated
`Annotated[A | B, Tagged({"a": A, "b": B})]` is read from a mapping whose `type` key names
the option (`{type: a, ...A's fields}`). Unknown keys, missing required keys, wrong types
and the classes' own `__post_init__` errors raise `ConfigError` naming the dotted field
path, e.g. `model.similarity: MoLConfig.p_q must be an integer >= 1, got 0`; the caller
prefixes the file.

`to_plain(obj)` is the inverse: a dataclass as YAML/JSON-safe dicts and lists (tuples
become lists; a tagged union's mapping starts with its `type`), so that
`build_dataclass(type(obj), to_plain(obj), "") == obj`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any, Literal

from recsys.errors import ConfigError

TAG_KEY = "type"


class Tagged:
    """`Annotated` marker of a union of dataclasses written as `{type: <tag>, ...fields}`."""

    def __init__(self, options: dict[str, type]) -> None:
        self.options = dict(options)

    def tag_of(self, value: Any) -> str:
        for tag, cls in self.options.items():
            if type(value) is cls:
                return tag
        raise ValueError(f"{type(value).__name__} is none of {sorted(self.options)}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _tagged(tp: Any) -> Tagged | None:
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Tagged)), None)
    return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _error(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}" if where else message)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (and build nested dataclasses)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        tagged = _tagged(tp)
        if tagged is None:
            return _coerce(value, typing.get_args(tp)[0], where)
        if not isinstance(value, dict):
            raise _error(where, f"expected a mapping with a `{TAG_KEY}` key, got {value!r}")
        fields = dict(value)
        tag = fields.pop(TAG_KEY, None)
        if tag not in tagged.options:
            raise _error(
                _join(where, TAG_KEY), f"must be one of {sorted(tagged.options)}, got {tag!r}"
            )
        return build_dataclass(tagged.options[tag], fields, where)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
        raise _error(where, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _error(where, f"must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _error(where, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _error(where, f"expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise _error(where, f"expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _error(where, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(where, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads `1e-3` (no dot) as a string: accept numeric strings for floats.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _error(where, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _error(where, f"expected a string, got {value!r}")
        return value
    return value


def build_dataclass(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping (None = all defaults): unknown or missing keys,
    wrong types and the class's own validation raise ConfigError naming `where` (a dotted
    path, e.g. `training.negatives`; "" at the top of a file)."""
    if raw is None:
        raw = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if not isinstance(raw, dict):
        raise _error(
            where, f"expected a mapping of {cls.__name__} fields ({', '.join(fields)}), got {raw!r}"
        )
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise _error(
            where,
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (allowed: {', '.join(fields)})",
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _error(
            where,
            f"missing key{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}",
        )
    hints = _hints(cls)
    kwargs = {name: _coerce(value, hints[name], _join(where, name)) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise _error(where, str(e)) from e


def to_plain(value: Any) -> Any:
    """A dataclass (or container of them) as plain YAML/JSON data; see the module docstring."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = _hints(type(value))
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            tagged = _tagged(hints[f.name])
            if tagged is not None and item is not None:
                out[f.name] = {TAG_KEY: tagged.tag_of(item), **to_plain(item)}
            else:
                out[f.name] = to_plain(item)
        return out
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value
