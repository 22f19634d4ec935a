"""The machinery of the configuration schema: what a key's type allows, checked by msgspec.

Each key of ``tidings.config.Config`` is one annotated dataclass field::

    ping_interval: Annotated[float, Meta(ge=1, le=3600), Help("...", "seconds")] = 25.0

``Meta`` (msgspec) carries the bounds, ``Literal[...]`` an enum, ``Help`` the one-line
description ``tidings genconfig`` writes and the unit error messages name. ``Key`` reads a
field back; ``Key.check`` converts a value with ``msgspec.convert(strict=True)`` and turns a
refusal into one ``ConfigError`` naming the key, the source, the value and what is allowed.

msgspec rather than pydantic: measured here (``python -X importtime``, 2-core shared
machine), ``import msgspec`` took 40-48 ms wall and pydantic 66-74 ms, 110 ms once
``BaseModel`` is loaded; msgspec validates plain dataclasses, so ``Config`` stays one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from tidings.exceptions import ConfigError

__all__ = ["Help", "Key", "did_you_mean", "keys_of", "parse_text", "toml_value"]


@dataclasses.dataclass(frozen=True, slots=True)
class Help:
    """A key's one-line description and the unit of its number; ``shown_default`` is what
    docs/configuration.md shows instead of the default (``generated``)."""

    text: str
    unit: str = ""
    shown_default: str | None = None


def _number(value: float, *, grouped: bool = False) -> str:
    """``25.0`` as ``25``; with ``grouped``, thousands separated by commas."""
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return f"{int(value):,}" if grouped else str(int(value))


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: its name, full annotated type, default and description."""

    name: str
    annotation: Any
    default: Any
    help: Help

    @property
    def base(self) -> Any:
        """The type without its ``Annotated`` metadata."""
        if typing.get_origin(self.annotation) is typing.Annotated:
            return typing.get_args(self.annotation)[0]
        return self.annotation

    @property
    def meta(self) -> msgspec.Meta | None:
        if typing.get_origin(self.annotation) is not typing.Annotated:
            return None
        found = [m for m in self.annotation.__metadata__ if isinstance(m, msgspec.Meta)]
        return found[0] if found else None

    @property
    def low(self) -> float | None:
        meta = self.meta
        if meta is None:
            return None
        value = meta.ge if meta.ge is not None else meta.gt
        return None if value is None else float(value)

    @property
    def high(self) -> float | None:
        meta = self.meta
        return None if meta is None or meta.le is None else float(meta.le)

    @property
    def above(self) -> bool:
        """Whether the low end is excluded (``gt``)."""
        return self.meta is not None and self.meta.gt is not None

    @property
    def choices(self) -> tuple[str, ...]:
        return typing.get_args(self.base) if typing.get_origin(self.base) is Literal else ()

    def describe(self) -> str:
        """What is allowed, as docs/configuration.md shows it: ``1 to 3,600``."""
        if self.choices:
            return ", ".join(f"`{c}`" for c in self.choices)
        low, high = self.low, self.high
        if low is None or high is None:
            return ""
        low_text, high_text = _number(low, grouped=True), _number(high, grouped=True)
        return (
            f"more than {low_text} up to {high_text}"
            if self.above
            else f"{low_text} to {high_text}"
        )

    def kind(self) -> str:
        """The type in words, for messages."""
        base = self.base
        if typing.get_origin(base) in (types.UnionType, typing.Union):
            return " or ".join(_kind_of(arg) for arg in typing.get_args(base))
        return _kind_of(base)

    def check(self, value: Any, source: str, name: str = "") -> Any:
        """``value`` converted to the key's type; ``ConfigError`` naming ``name`` (the key's
        own by default) and ``source`` when it is refused."""
        try:
            return msgspec.convert(value, self.annotation, strict=True)
        except msgspec.ValidationError:
            pass
        shown = _number(value) if _is_number(value) else repr(value)
        where = f" ({source})" if source else ""
        try:
            msgspec.convert(value, self.base, strict=True)
        except msgspec.ValidationError:
            problem = f"expected {self.kind()}, got {_got(value)}"
        else:
            unit = f" {self.help.unit}" if self.help.unit else ""
            problem = f"out of range: allowed {self.describe()}{unit}"
        raise ConfigError(f"{name or self.name} = {shown}{where}: {problem}")

    def parse(self, text: str, source: str) -> Any:
        """An environment variable's text as the key's value, checked."""
        return self.check(parse_text(self.base, text), source)


def _got(value: Any) -> str:
    """The TOML type of ``value`` in words."""
    # bool before int: True is an int too.
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
    )
    for kind, words in kinds:
        if isinstance(value, kind):
            return words
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind_of(kind: Any) -> str:
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if kind in words:
        return words[kind]
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        return "a list of " + _kind_of(typing.get_args(kind)[0]).removeprefix("a ") + "s"
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(kind))
    if origin is dict:
        return "a table"
    return str(kind)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def parse_text(kind: Any, text: str) -> Any:
    """Text (an environment variable) as a value of ``kind``; what doesn't parse is left as
    text, for the check to refuse with the allowed values."""
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    stripped = text.strip()
    if kind is bool:
        low = stripped.lower()
        return True if low in _TRUE else False if low in _FALSE else text
    if kind is int:
        try:
            return int(stripped)
        except ValueError:
            return text
    if kind is float:
        try:
            return float(stripped)
        except ValueError:
            return text
    origin = typing.get_origin(kind)
    members = typing.get_args(kind) if origin in (types.UnionType, typing.Union) else (kind,)
    if any(typing.get_origin(m) is list for m in members):
        # A JSON array, or comma-separated items.
        if stripped.startswith("["):
            try:
                return json.loads(stripped)
            except ValueError:
                return text
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def keys_of(cls: type) -> dict[str, Key]:
    """The keys of a dataclass whose fields are annotated as this module describes."""
    hints = typing.get_type_hints(cls, include_extras=True)
    keys = {}
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        helps = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Help)]
        if not helps:
            raise TypeError(f"{cls.__name__}.{f.name} has no Help(...) annotation")
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            factory: Any = f.default_factory
            default = factory()
        keys[f.name] = Key(f.name, annotation, default, helps[0])
    return keys


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def toml_value(value: Any) -> str:
    """``value`` (a default: str, bool, number, list or table of them) written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: the same escapes, \uXXXX included.
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + (f" {items} " if items else "") + "}"
    raise TypeError(f"no TOML for {value!r}")
