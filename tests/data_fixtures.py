"""Writers of tiny datasets in each dataset's exact on-disk format (for tests)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _rgb(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def write_nyud(root: Path, ids_train=("00001", "00002"), ids_val=("00003",), h=48, w=64, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in (*ids_train, *ids_val):
        Image.fromarray(_rgb(h, w, int(i))).save(root / "images" / f"{i}.png")
        seg = rng.integers(0, 41, (h, w), dtype=np.uint8)
        Image.fromarray(seg).save(root / "segmentation" / f"{i}.png")
        np.save(root / "depth" / f"{i}.npy", rng.uniform(0.5, 9.0, (h, w)).astype(np.float32))
        n = rng.normal(size=(h, w, 3))
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        Image.fromarray(np.clip(np.round((n + 1) * 127.5), 1, 255).astype(np.uint8)).save(root / "normals" / f"{i}.png")
        Image.fromarray((rng.random((h, w)) < 0.1).astype(np.uint8) * 255).save(root / "edge" / f"{i}.png")
    (root / "gt_sets" / "train.txt").write_text("\n".join(ids_train) + "\n")
    (root / "gt_sets" / "val.txt").write_text("\n".join(ids_val) + "\n")
    return root


CAMERA = {"extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.0, "yaw": -0.0195, "z": 1.22},
          "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}}


def write_cityscapes(root: Path, split="val", city="frankfurt", n=2, h=64, w=128, seed=0, label_ids=None) -> list[str]:
    rng = np.random.default_rng(seed)
    stems = []
    for k in range(n):
        stem = f"{city}_000000_{k:06d}"
        stems.append(f"{city}/{stem}")
        for folder in ("leftImg8bit", "gtFine", "disparity", "camera"):
            (root / folder / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(h, w, k)).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        lab = label_ids if label_ids is not None else rng.integers(0, 34, (h, w)).astype(np.uint8)
        Image.fromarray(lab.astype(np.uint8)).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
        disp = rng.integers(0, 30000, (h, w)).astype(np.uint16)
        cv2.imwrite(str(root / "disparity" / split / city / f"{stem}_disparity.png"), disp)
        (root / "camera" / split / city / f"{stem}_camera.json").write_text(json.dumps(CAMERA))
    return stems


VK_COLORS = """Category r g b
Terrain 210 0 200
Sky 90 200 255
Tree 0 199 0
Vegetation 90 240 0
Building 140 140 140
Road 100 60 100
GuardRail 250 100 255
TrafficSign 255 255 0
TrafficLight 200 200 0
Pole 255 130 0
Misc 80 80 80
Truck 160 60 60
Car 255 127 80
Van 0 139 139
Undefined 0 0 0
"""


def write_vkitti2(root: Path, scenes=("Scene01", "Scene02"), frames=5, h=30, w=100, seed=0) -> None:
    from densemtl.data.vkitti2 import VKITTI2_COLORS

    rng = np.random.default_rng(seed)
    for sc in scenes:
        base = root / sc / "15-deg-left"
        for sub in ("rgb", "classSegmentation", "depth"):
            (base / "frames" / sub / "Camera_0").mkdir(parents=True, exist_ok=True)
        (base / "colors.txt").write_text(VK_COLORS)
        for f in range(frames):
            Image.fromarray(_rgb(h, w, f)).save(base / "frames" / "rgb" / "Camera_0" / f"rgb_{f:05d}.jpg", quality=95)
            ids = rng.integers(0, 14, (h, w))
            rgb = np.array(VKITTI2_COLORS, dtype=np.uint8)[ids]
            rgb[0, 0] = 0  # undefined
            Image.fromarray(rgb).save(base / "frames" / "classSegmentation" / "Camera_0" / f"classgt_{f:05d}.png")
            depth = rng.integers(100, 65535, (h, w)).astype(np.uint16)
            cv2.imwrite(str(base / "frames" / "depth" / "Camera_0" / f"depth_{f:05d}.png"), depth)


def write_synthia(root: Path, n=5, h=38, w=64, seed=0) -> None:
    rng = np.random.default_rng(seed)
    for sub in ("RGB", "GT/LABELS", "Depth/Depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{i:07d}.png"
        Image.fromarray(_rgb(h, w, i)).save(root / "RGB" / name)
        lab = np.zeros((h, w, 3), np.uint16)
        lab[..., 0] = rng.integers(0, 23, (h, w))
        lab[..., 1] = rng.integers(0, 500, (h, w))  # instance ids
        cv2.imwrite(str(root / "GT" / "LABELS" / name), lab[..., ::-1])
        dep = np.zeros((h, w, 3), np.uint16)
        dep[..., 0] = rng.integers(50, 60000, (h, w))
        cv2.imwrite(str(root / "Depth" / "Depth" / name), dep[..., ::-1])
