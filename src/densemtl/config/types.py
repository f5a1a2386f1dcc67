"""Value types of config keys: what a key accepts, its range, and how to say what was expected.

A check is called with a plain (resolved) value and returns it, normalised (``1e4`` for an
integer key becomes ``10000``), or raises :class:`Invalid`. :func:`check_value` turns that into
one line naming the key, the value given and what was expected.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable


class ConfigError(ValueError):
    """A bad config file, key or value (the message names the key)."""


class Invalid(Exception):
    """A value does not fit its type; ``args[0]`` is an optional detail."""


def show(value) -> str:
    """A short, one-line rendering of a config value (strings quoted, YAML-like lists)."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(show(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Check:
    """Base class: accept anything."""

    expected = "a value"

    def __call__(self, value):
        return value

    def example(self):
        """A valid value (used to describe and test the type)."""
        return None


def check_value(check: Check, key: str, value, what: str = ""):
    """``check(value)``; on failure a :class:`~densemtl.config.ConfigError` naming ``key``."""
    try:
        return check(value)
    except Invalid as e:
        detail = f" ({e.args[0]})" if e.args and e.args[0] else ""
        raise ConfigError(f"{key}{what}: expected {check.expected}, got {show(value)}{detail}") from None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    def num(v):
        return str(v) if isinstance(v, int) else f"{v:g}"

    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{num(lo)}, {num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {num(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {num(hi)}"
    return ""


class Int(Check):
    """An integer (``bool`` is not one); an integral float such as ``1e4`` is accepted as int."""

    def __init__(self, lo: int | None = None, hi: int | None = None, expected: str | None = None):
        self.lo, self.hi = lo, hi
        self.expected = expected or "an integer" + _range_text(lo, hi, False, False)

    def __call__(self, value):
        if not _is_number(value) or not math.isfinite(value) or value != int(value):
            raise Invalid()
        value = int(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise Invalid()
        return value

    def example(self):
        return self.lo if self.lo is not None else 0


class Number(Check):
    """A finite real number within an optional range (open or closed at each end)."""

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
                 expected: str | None = None):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.expected = expected or "a number" + _range_text(lo, hi, lo_open, hi_open)

    def __call__(self, value):
        if not _is_number(value) or not math.isfinite(value):
            raise Invalid()
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            raise Invalid()
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            raise Invalid()
        return value

    def example(self):
        if self.lo is not None:
            return self.lo if not self.lo_open else (self.lo + (self.hi if self.hi is not None else self.lo + 2)) / 2
        return 0.0


class Bool(Check):
    expected = "true or false"

    def __call__(self, value):
        if not isinstance(value, bool):
            raise Invalid()
        return value

    def example(self):
        return False


class Text(Check):
    """A non-empty string; ``choices`` (a collection or a function returning one, e.g. a
    registry's list) restricts it."""

    def __init__(self, choices: Iterable[str] | Callable[[], Iterable[str]] | None = None, expected: str | None = None,
                 numbers: bool = False):
        self._choices, self._expected, self.numbers = choices, expected, numbers

    @property
    def choices(self) -> list[str] | None:
        c = self._choices
        return None if c is None else list(c() if callable(c) else c)

    @property
    def expected(self) -> str:
        if self._expected:
            return self._expected
        return "a non-empty string" if self.choices is None else "one of " + ", ".join(self.choices)

    def __call__(self, value):
        if self.numbers and _is_number(value):  # e.g. run_name=1 (YAML reads a number)
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise Invalid()
        if self.choices is not None and value not in self.choices:
            raise Invalid()
        return value

    def example(self):
        return self.choices[0] if self.choices else "x"


class Maybe(Check):
    """``null`` or a value of ``inner``."""

    def __init__(self, inner: Check):
        self.inner = inner

    @property
    def expected(self) -> str:
        return f"null or {self.inner.expected}"

    def __call__(self, value):
        return None if value is None else self.inner(value)

    def example(self):
        return None


class AnyOf(Check):
    """The first of ``checks`` that accepts the value."""

    def __init__(self, *checks: Check, expected: str | None = None):
        self.checks = checks
        self.expected = expected or " or ".join(c.expected for c in checks)

    def __call__(self, value):
        for c in self.checks:
            try:
                return c(value)
            except Invalid:
                pass
        raise Invalid()

    def example(self):
        return self.checks[0].example()


class ListOf(Check):
    """A list of ``item`` values: exactly ``size`` items, or at least ``min_size``; ``distinct``:
    no value twice."""

    def __init__(self, item: Check, size: int | None = None, min_size: int = 0, distinct: bool = False,
                 expected: str | None = None):
        self.item, self.size, self.min_size, self.distinct = item, size, min_size, distinct
        if expected is None:
            what = _plural(item.expected)
            expected = (f"a list of {size} {what}" if size is not None
                        else f"a non-empty list of {what}" if min_size else f"a list of {what}")
        self.expected = expected

    def __call__(self, value):
        if not isinstance(value, (list, tuple)):
            raise Invalid()
        if (self.size is not None and len(value) != self.size) or len(value) < self.min_size:
            raise Invalid(f"{len(value)} item(s)")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(self.item(v))
            except Invalid:
                raise Invalid(f"item {i} is {show(v)}") from None
        if self.distinct and len(set(out)) != len(out):
            raise Invalid("a value appears twice")
        return out

    def example(self):
        return [self.item.example()] * (self.size or self.min_size)


def _plural(expected: str) -> str:
    """``"an integer >= 1"`` -> ``"integers >= 1"`` (for list descriptions)."""
    for one, many in (("an integer", "integers"), ("a number", "numbers"), ("a non-empty string", "non-empty strings"),
                      ("true or false", "booleans")):
        if expected.startswith(one):
            return many + expected[len(one):]
    return f"items ({expected})"


class Size(ListOf):
    """``[H, W]``: two positive integers, multiples of ``divisor``."""

    def __init__(self, divisor: int = 1):
        self.divisor = divisor
        mult = f", multiples of {divisor}" if divisor > 1 else ""
        super().__init__(Int(1), size=2, expected=f"[H, W]: two positive integers{mult}")

    def __call__(self, value):
        out = super().__call__(value)
        if any(v % self.divisor for v in out):
            raise Invalid(f"not a multiple of {self.divisor}")
        return out

    def example(self):
        return [self.divisor * 2, self.divisor * 2]


class Mapping(Check):
    """A free-form section (``key: value`` pairs), checked by what it configures."""

    def __init__(self, expected: str = "a mapping of options (key: value)"):
        self.expected = expected

    def __call__(self, value):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid()
        return value

    def example(self):
        return {}


def like(default) -> Check:
    """The check implied by an option's default value (``True`` -> a boolean, ``(0, 1)`` -> a
    list of integers, ``"add"`` -> a string, ``None`` -> anything)."""
    if isinstance(default, bool):
        return Bool()
    if isinstance(default, int):
        return Int()
    if isinstance(default, float):
        return Number()
    if isinstance(default, str):
        return Text()
    if isinstance(default, (list, tuple)):
        if default and all(isinstance(v, int) and not isinstance(v, bool) for v in default):
            return ListOf(Int())
        if default and all(_is_number(v) for v in default):
            return ListOf(Number())
        return ListOf(Check(), expected="a list")
    if isinstance(default, dict):
        return Mapping()
    return Check()
