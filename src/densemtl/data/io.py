"""File readers with errors that name the file and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset file is missing, unreadable or holds unexpected content.

    Raised in a DataLoader worker process, the error reaches the main process rebuilt by
    PyTorch from the worker's formatted traceback; the constructor keeps only the original
    one-line message, so the CLI prints the same line whatever ``data.num_workers``.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (_worker_message(args[0], type(self)),)
        super().__init__(*args)


def _worker_message(text: str, cls: type) -> str:
    """The original message of ``cls`` in PyTorch's "Caught X in DataLoader worker process N.
    Original Traceback ..." text (the last ``module.X: message`` line); ``text`` otherwise."""
    if not (text.startswith(f"Caught {cls.__name__} in DataLoader worker") and "\nOriginal Traceback" in text):
        return text
    marker = f"\n{cls.__module__}.{cls.__qualname__}: "
    at = text.rfind(marker)
    return text[at + len(marker):].strip() if at >= 0 else text


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing {what}")
    return path


_GRAY16 = ("I;16", "I;16L", "I;16B", "I;16N")


def read_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB. 16-bit grayscale is scaled to 8 bits (v / 257, so 65535 ->
    255); 32-bit integer or float images (PIL modes ``I``, ``F``) have no defined range and
    are refused."""
    from PIL import Image

    require_file(path, "image")
    try:
        with Image.open(path) as im:
            if im.mode in _GRAY16:
                gray = np.round(np.asarray(im, dtype=np.float32) / 257.0).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if im.mode in ("I", "F"):
                raise DataError(f"{path}: {'32-bit integer' if im.mode == 'I' else 'floating-point'} image (PIL mode "
                                f"{im.mode}) has no defined value range; expected an 8- or 16-bit RGB or grayscale image")
            return np.asarray(im.convert("RGB")).copy()
    except DataError:
        raise
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


def numeric_map(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``arr`` squeezed to one ``(H, W)`` map of real numbers (bool, int or float), else a
    :class:`DataError` naming the file, its dtype and shape."""
    squeezed = arr.squeeze()
    if arr.dtype.kind not in "biuf" or squeezed.ndim != 2:
        raise DataError(f"{path}: {what} must be a 2-D (H, W) array of numbers, got dtype {arr.dtype} shape {arr.shape}")
    return squeezed


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
