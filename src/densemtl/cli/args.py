"""Argument types shared by the subcommands: checked when the command line is parsed."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def out_dir(text: str) -> str:
    """An output folder: new or existing, not an existing file."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file; expected a folder (new or existing)")
    return text


def out_file(text: str) -> str:
    """An output file: new or existing, not a folder."""
    if text.endswith(("/", "\\")) or Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file path")
    return text


def size_hw(text: str) -> str:
    """``HxW``: two positive integers, e.g. ``448x576`` (returned as given)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or not int(m.group(1)) or not int(m.group(2)):
        raise argparse.ArgumentTypeError(f"expected HxW with two positive integers (height x width), e.g. 448x576; got '{text}'")
    return text
