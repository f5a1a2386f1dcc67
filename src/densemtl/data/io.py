"""File readers with errors that name the file and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset file is missing, unreadable or holds unexpected content."""


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing {what}")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB."""
    from PIL import Image

    require_file(path, "image")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except Exception as e:
        raise DataError(f"{path}: cannot read image ({e})") from e


def read_png(path: Path, what: str = "label") -> np.ndarray:
    """Any PNG with its exact bit depth and channels (16-bit RGB included), channels as RGB."""
    import cv2

    require_file(path, what)
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"{path}: cannot read {what} (corrupt or not an image)")
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., 2::-1] if arr.shape[2] == 3 else arr[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(arr)


def read_npy(path: Path, what: str = "array") -> np.ndarray:
    require_file(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from e


def read_json(path: Path, what: str = "json") -> dict:
    require_file(path, what)
    try:
        return json.loads(Path(path).read_text())
    except Exception as e:
        raise DataError(f"{path}: cannot parse {what} ({e})") from e


def expect_shape(arr: np.ndarray, shape, path: Path, what: str) -> np.ndarray:
    if tuple(arr.shape[: len(shape)]) != tuple(shape):
        raise DataError(f"{path}: {what} has size {arr.shape[1]}x{arr.shape[0]} (WxH), expected {shape[1]}x{shape[0]}")
    return arr


def map_labels(raw: np.ndarray, lut: np.ndarray, path: Path, unknown_ok: bool = False) -> np.ndarray:
    """Map raw ids through ``lut`` (raw id -> class, 255 = void, -1 = not a known id)."""
    raw = raw.astype(np.int64)
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        bad = np.unique(raw[(raw < 0) | (raw >= len(lut))])
        raise DataError(f"{path}: unknown class id(s) {bad[:10].tolist()} (valid raw ids: 0..{len(lut) - 1})")
    out = lut[raw]
    if not unknown_ok and (out < 0).any():
        bad = np.unique(raw[out < 0])
        raise DataError(f"{path}: unknown class id(s) {bad[:10].tolist()}")
    return np.where(out < 0, 255, out).astype(np.uint8)


def write_png(path: Path, arr: np.ndarray) -> None:
    """Write uint8/uint16 gray or RGB arrays losslessly (uint16 RGB through OpenCV)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    ok, png = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise DataError(f"{path}: could not encode a PNG from an array {arr.shape} {arr.dtype}")
    try:
        path.write_bytes(png)
    except OSError as e:  # name the file also when the write itself fails (full disk)
        raise OSError(e.errno, e.strerror, str(path)) from None
