"""The error of the converter and its key listings."""

from __future__ import annotations

from typing import Iterable

MAX_LISTED = 40


class ConversionError(ValueError):
    """The file cannot be converted (not a state dict, unknown keys, inconsistent options)."""


def listing(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = "\n    ".join(keys[:MAX_LISTED])
    more = f"\n    ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return f"\n    {shown}{more}"
