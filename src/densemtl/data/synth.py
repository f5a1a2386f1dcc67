"""Procedural indoor scenes: the bundled default dataset (what ``make demo`` trains on).

A room (floor, walls, ceiling) with randomly placed boxes, spheres and cylinders of several
semantic classes, procedural textures, Lambertian shading and a pinhole camera at a random
pose, ray-cast with vectorised NumPy. Labels are exact by construction: classes, metric
z-depth, camera-frame normals (OpenCV frame: x right, y down, z forward) and edges (object
boundaries and depth discontinuities). Deterministic per (seed, index).

Written in the NYUDv2 layout (see :mod:`densemtl.data.nyud`) with a ``dataset.json``, so the
``nyud`` loader reads it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SYNTH_CLASSES = ("wall", "floor", "ceiling", "cabinet", "table", "ball", "pillar", "crate")
WALL, FLOOR, CEILING, CABINET, TABLE, BALL, PILLAR, CRATE = range(8)
_BASE_COLORS = {
    WALL: (0.78, 0.74, 0.66), FLOOR: (0.55, 0.38, 0.24), CEILING: (0.92, 0.92, 0.90), CABINET: (0.35, 0.45, 0.62),
    TABLE: (0.62, 0.50, 0.30), BALL: (0.85, 0.25, 0.20), PILLAR: (0.55, 0.60, 0.55), CRATE: (0.70, 0.62, 0.35),
}


@dataclass
class SceneStyle:
    """Appearance and camera parameters; change them to create a domain shift."""

    hfov_deg: float = 62.0
    camera_height: tuple[float, float] = (1.1, 1.8)
    ambient: float = 0.35
    light: float = 0.75
    color_jitter: float = 0.12
    hue_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gamma: float = 1.0
    noise: float = 0.01
    texture_scale: float = 1.0
    num_objects: tuple[int, int] = (4, 9)


STYLES = {
    "default": SceneStyle(),
    # a visibly different domain: warmer, darker, wider lens, lower camera, stronger textures
    "shifted": SceneStyle(hfov_deg=75.0, camera_height=(0.7, 1.2), ambient=0.2, light=0.9, color_jitter=0.2,
                          hue_shift=(0.12, -0.02, -0.12), gamma=1.3, noise=0.03, texture_scale=2.0),
}


def camera_intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0, (width - 1) / 2.0], [0, fx, (height - 1) / 2.0], [0, 0, 1]], dtype=np.float64)


def _look_at(pos, target, roll):
    up = np.array([0.0, 1.0, 0.0])
    f = target - pos
    f /= np.linalg.norm(f)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    y = np.cross(f, x)
    c, s = np.cos(roll), np.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    return np.stack([x, y, f])  # rows: camera axes in world coordinates


def _noise(p, rng_vals, scale):
    """Smooth pseudo-random texture from sums of sinusoids of the world position."""
    out = np.zeros(p.shape[:-1])
    for a, b, c, ph in rng_vals:
        out += np.sin(scale * (a * p[..., 0] + b * p[..., 1] + c * p[..., 2]) + ph)
    return out / len(rng_vals)


@dataclass
class _Hits:
    t: np.ndarray
    n: np.ndarray
    cls: np.ndarray
    obj: np.ndarray

    def update(self, t, n, cls, obj):
        better = np.isfinite(t) & (t > 1e-4) & (t < self.t)
        self.t = np.where(better, t, self.t)
        self.n = np.where(better[:, None], n, self.n)
        self.cls = np.where(better, cls, self.cls)
        self.obj = np.where(better, obj, self.obj)


def _box_hit(o, d, center, half, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # world -> box frame
    ol, dl = (o - center) @ R.T, d @ R.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - ol) / dl, (half - ol) / dl
    tmin_axes, tmax_axes = np.minimum(t1, t2), np.maximum(t1, t2)
    tmin, tmax = np.nanmax(tmin_axes, 1), np.nanmin(tmax_axes, 1)
    hit = (tmax >= tmin) & (tmin > 1e-4)
    axis = np.nanargmax(tmin_axes, 1)
    nl = np.zeros_like(dl)
    nl[np.arange(len(dl)), axis] = -np.sign(dl[np.arange(len(dl)), axis])
    return np.where(hit, tmin, np.inf), nl @ R


def _sphere_hit(o, d, center, r):
    oc = o - center
    a = (d * d).sum(1)
    b = 2 * (oc * d).sum(1)
    c = (oc * oc).sum() - r * r
    disc = b * b - 4 * a * c
    t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    p = o + t[:, None] * d
    n = (p - center) / r
    return np.where(t > 1e-4, t, np.inf), n


def _cylinder_hit(o, d, cx, cz, r, y1):
    ox, oz = o[0] - cx, o[2] - cz
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (ox * d[:, 0] + oz * d[:, 2])
    c = ox * ox + oz * oz - r * r
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    y = o[1] + t * d[:, 1]
    t = np.where((y >= 0) & (y <= y1) & (t > 1e-4), t, np.inf)
    p = o + t[:, None] * d
    n = np.stack([p[:, 0] - cx, np.zeros_like(t), p[:, 2] - cz], 1) / r
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (y1 - o[1]) / d[:, 1]
    pc = o + tc[:, None] * d
    cap = (tc > 1e-4) & ((pc[:, 0] - cx) ** 2 + (pc[:, 2] - cz) ** 2 <= r * r) & (tc < t)
    t = np.where(cap, tc, t)
    n = np.where(cap[:, None], np.array([0.0, 1.0, 0.0]), n)
    return t, n


@dataclass
class Scene:
    """Everything that defines one procedural scene except the camera pose."""

    room: tuple[float, float, float]
    objects: list
    base: np.ndarray
    obj_tint: np.ndarray
    waves: np.ndarray
    light: np.ndarray
    style: SceneStyle
    pos: np.ndarray  # reference camera position (world, y up)
    R: np.ndarray  # reference camera axes (rows: x right, y down, z forward) in world coordinates


def sample_scene(seed: int, index: int, style: SceneStyle | str = "default") -> Scene:
    """Draw room, objects, appearance and the reference camera of scene ``index``."""
    st = STYLES[style] if isinstance(style, str) else style
    rng = np.random.default_rng([seed, index])
    rx, rz, ry = rng.uniform(2.5, 4.5), rng.uniform(2.5, 4.5), rng.uniform(2.6, 3.2)
    pos = np.array([rng.uniform(-rx + 0.6, rx - 0.6), rng.uniform(*st.camera_height), rng.uniform(-rz + 0.6, rz - 0.6)])
    target = np.array([rng.uniform(-rx, rx), rng.uniform(0.2, 1.2), rng.uniform(-rz, rz)])
    while np.linalg.norm((target - pos)[[0, 2]]) < 1.5:
        target = np.array([rng.uniform(-rx, rx), rng.uniform(0.2, 1.2), rng.uniform(-rz, rz)])
    R = _look_at(pos, target, rng.uniform(-0.08, 0.08))
    n_obj = int(rng.integers(st.num_objects[0], st.num_objects[1] + 1))
    objects = []
    obj_id = 7  # 1..6 are the room's planes
    for _ in range(n_obj * 4):
        if len(objects) >= n_obj:
            break
        kind = int(rng.choice([CABINET, TABLE, BALL, PILLAR, CRATE]))
        x, z = rng.uniform(-rx + 0.5, rx - 0.5), rng.uniform(-rz + 0.5, rz - 0.5)
        if np.hypot(x - pos[0], z - pos[2]) < 1.2:
            continue
        if kind in (CABINET, TABLE, CRATE):
            half = {CABINET: (rng.uniform(0.3, 0.6), rng.uniform(0.6, 1.0), rng.uniform(0.25, 0.45)),
                    TABLE: (rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.4), rng.uniform(0.4, 0.6)),
                    CRATE: (rng.uniform(0.15, 0.3),) * 3}[kind]
            half = np.array(half)
            objects.append(("box", kind, obj_id, np.array([x, half[1], z]), half, rng.uniform(0, np.pi)))
        elif kind == BALL:
            r = rng.uniform(0.15, 0.45)
            objects.append(("sphere", kind, obj_id, np.array([x, r, z]), r))
        else:
            objects.append(("cylinder", kind, obj_id, x, z, rng.uniform(0.1, 0.3), rng.uniform(0.8, ry)))
        obj_id += 1
    base = np.array([_BASE_COLORS[c] for c in range(len(SYNTH_CLASSES))])
    base = np.clip(base + rng.uniform(-st.color_jitter, st.color_jitter, base.shape) + np.array(st.hue_shift), 0.03, 1)
    obj_tint = np.clip(1 + rng.uniform(-0.15, 0.15, (obj_id + 1, 3)), 0.5, 1.5)
    waves = rng.uniform(-1, 1, (3, 4)) * np.array([1, 1, 1, np.pi])
    light = np.array([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.6, 0.6)])
    light /= np.linalg.norm(light)
    return Scene((rx, ry, rz), objects, base, obj_tint, waves, light, st, pos, R)


def render_view(scene: Scene, size, pos: np.ndarray | None = None, R: np.ndarray | None = None,
                noise_seed: int | None = None) -> dict:
    """Ray-cast ``scene`` from camera ``(pos, R)`` (default: the reference camera).

    Shading is view-independent (Lambertian + a fill light fixed to the reference camera),
    so views of the same scene are photometrically consistent up to the pixel noise.
    """
    st = scene.style
    pos = scene.pos if pos is None else pos
    R = scene.R if R is None else R
    h, w = size
    K = camera_intrinsics(w, h, st.hfov_deg)
    rx, ry, rz = scene.room
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    dc = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((h, w))], -1).reshape(-1, 3)
    d = dc @ R  # world directions whose camera z-component is 1: t = z-depth
    n_pix = d.shape[0]
    hits = _Hits(np.full(n_pix, np.inf), np.zeros((n_pix, 3)), np.zeros(n_pix, np.int64), np.zeros(n_pix, np.int64))
    planes = [(0, -rx, 1.0, WALL), (0, rx, -1.0, WALL), (2, -rz, 1.0, WALL), (2, rz, -1.0, WALL),
              (1, 0.0, 1.0, FLOOR), (1, ry, -1.0, CEILING)]
    for k, (axis, c, sgn, cls) in enumerate(planes):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (c - pos[axis]) / d[:, axis]
        n = np.zeros(3)
        n[axis] = sgn
        hits.update(np.where(t > 0, t, np.inf), np.broadcast_to(n, d.shape), cls, k + 1)
    for obj in scene.objects:
        if obj[0] == "box":
            _, cls, oid, center, half, yaw = obj
            t, n = _box_hit(pos, d, center, half, yaw)
        elif obj[0] == "sphere":
            _, cls, oid, center, r = obj
            t, n = _sphere_hit(pos, d, center, r)
        else:
            _, cls, oid, x, z, r, y1 = obj
            t, n = _cylinder_hit(pos, d, x, z, r, y1)
        hits.update(t, n, cls, oid)
    depth = hits.t.reshape(h, w)
    p = pos + hits.t[:, None] * d
    albedo = scene.base[hits.cls] * scene.obj_tint[hits.obj]
    tex = 1 + 0.18 * _noise(p, scene.waves, 3.0 * st.texture_scale)
    checker = ((np.floor(p[:, 0] * 2 * st.texture_scale) + np.floor(p[:, 2] * 2 * st.texture_scale)) % 2) * 0.25 + 0.85
    stripes = 0.9 + 0.1 * np.sign(np.sin(p[:, 1] * 12 * st.texture_scale))
    tex = np.where(hits.cls == FLOOR, checker, np.where(hits.cls == WALL, stripes * tex, tex))
    lam = np.clip(hits.n @ scene.light, 0, 1)
    fill = np.clip(-(hits.n @ scene.R[2]), 0, 1) * 0.25  # fill light along the reference view
    shade = st.ambient + st.light * lam + fill
    rgb = np.clip(albedo * tex[:, None] * shade[:, None], 0, 1) ** st.gamma
    if st.noise > 0:
        rng = np.random.default_rng(noise_seed)
        rgb = np.clip(rgb + rng.normal(0, st.noise, rgb.shape), 0, 1)
    image = (rgb.reshape(h, w, 3) * 255 + 0.5).astype(np.uint8)
    normals = (hits.n @ R.T).reshape(h, w, 3).astype(np.float32)  # world -> camera frame
    objects = hits.obj.reshape(h, w).astype(np.int32)
    from ..tasks.edges import edges_from_labels

    edges = edges_from_labels(objects, depth, depth_jump=0.05)
    return {"image": image, "semseg": hits.cls.reshape(h, w).astype(np.uint8), "depth": depth.astype(np.float32),
            "normals": normals, "edges": edges, "objects": objects, "K": K, "pos": pos, "R": R}


def render_scene(seed: int, index: int, size=(128, 160), style: SceneStyle | str = "default") -> dict:
    """Render scene ``index`` of the set with ``seed`` from its reference camera.

    Returns ``image (H, W, 3) uint8``, ``semseg (H, W) uint8`` (class ids 0..7),
    ``depth (H, W) float32`` metres, ``normals (H, W, 3) float32`` camera frame,
    ``edges (H, W) uint8`` 0/1, ``objects (H, W) int32``, ``K (3, 3)`` and the camera pose.
    """
    return render_view(sample_scene(seed, index, style), size, noise_seed=(seed, index))


def relative_pose(pos_a, R_a, pos_b, R_b) -> np.ndarray:
    """4x4 transform taking camera-a coordinates to camera-b coordinates (X_b = T X_a)."""
    # X_cam = R (X_world - pos)  =>  X_world = R^T X_cam + pos
    T = np.eye(4)
    T[:3, :3] = R_b @ R_a.T
    T[:3, 3] = R_b @ (pos_a - pos_b)
    return T


MOTIONS = ("random", "forward", "lateral")


def render_sequence(seed: int, index: int, size=(128, 160), style: SceneStyle | str = "default",
                    max_translation: float = 0.25, max_rotation_deg: float = 2.0, motion: str = "random") -> dict:
    """Frames t-1, t, t+1 of a camera moving by small known rigid motions around scene ``index``.

    ``motion="random"``: each neighbour is displaced by ``max_translation`` (m) along the view
    direction plus a uniform random offset of up to ``max_translation`` per axis, and rotated
    by up to ``max_rotation_deg`` about a random axis. ``motion="forward"``: a camera driving
    forward at about constant speed like a car's (``max_translation`` per frame along the view
    direction, random offsets and rotations 5x smaller). ``motion="lateral"``: the same but
    moving sideways (along the camera's x axis, like a view from a train window), which gives
    parallax everywhere in the image.

    Returns ``{"frames": [view(t-1), view(t), view(t+1)], "T_t_to_prev", "T_t_to_next"}`` with
    4x4 transforms mapping camera-t coordinates into the neighbour's camera coordinates.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown camera motion {motion!r}; choose from {', '.join(MOTIONS)}")
    jitter = 1.0 if motion == "random" else 0.2  # forward / lateral: near-constant velocity
    scene = sample_scene(seed, index, style)
    rng = np.random.default_rng([seed, index, 1])
    views = {}
    for k in (-1, 1):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        ang = np.radians(rng.uniform(-max_rotation_deg, max_rotation_deg) * jitter)
        K_ = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        dR = np.eye(3) + np.sin(ang) * K_ + (1 - np.cos(ang)) * (K_ @ K_)
        direction = scene.R[0] if motion == "lateral" else scene.R[2]
        step = rng.uniform(-max_translation, max_translation, 3) * jitter + direction * max_translation * k
        views[k] = (scene.pos + step, dR @ scene.R)
    frames = [render_view(scene, size, *views[-1], noise_seed=(seed, index, 0)),
              render_view(scene, size, noise_seed=(seed, index, 1)),
              render_view(scene, size, *views[1], noise_seed=(seed, index, 2))]
    return {"frames": frames,
            "T_t_to_prev": relative_pose(scene.pos, scene.R, *views[-1]),
            "T_t_to_next": relative_pose(scene.pos, scene.R, *views[1])}


def _write_one(args):
    out, seed, index, size, style, sequences, motion = args
    from .io import write_png
    from .nyud import encode_normals_png

    name = f"{index:05d}"
    if sequences:
        q = render_sequence(seed, index, size, style, motion=motion)
        s = q["frames"][1]
        write_png(out / "sequence" / f"{name}_prev.png", q["frames"][0]["image"])
        write_png(out / "sequence" / f"{name}_next.png", q["frames"][2]["image"])
        (out / "poses").mkdir(parents=True, exist_ok=True)
        (out / "poses" / f"{name}.json").write_text(json.dumps(
            {"T_t_to_prev": q["T_t_to_prev"].tolist(), "T_t_to_next": q["T_t_to_next"].tolist()}))
    else:
        s = render_scene(seed, index, size, style)
    write_png(out / "images" / f"{name}.png", s["image"])
    write_png(out / "segmentation" / f"{name}.png", s["semseg"] + 1)  # 0 = void, 1..8 classes
    np.save(out / "depth" / f"{name}.npy", s["depth"])
    write_png(out / "normals" / f"{name}.png", encode_normals_png(s["normals"]))
    write_png(out / "edge" / f"{name}.png", s["edges"] * 255)
    return name


def _replace_dir(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` at ``out``, removing what ``out`` held only once ``new``
    is in place; if the swap fails, ``out`` is left as it was. ``new`` is a sibling of ``out``,
    or a child of an empty ``out`` (whose entries then move up: ``out`` may be a mount point)."""
    if new.parent == out:
        moved = []
        try:
            for entry in sorted(new.iterdir()):
                os.rename(entry, out / entry.name)
                moved.append(out / entry.name)
        except BaseException:
            for m in moved:
                shutil.rmtree(m, ignore_errors=True) if m.is_dir() else m.unlink()
            raise
        new.rmdir()
        return
    if not out.exists():
        os.rename(new, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def generate_dataset(out, num: int = 1000, size=(128, 160), seed: int = 0, style: str = "default",
                     val_fraction: float = 0.2, workers: int | None = None, progress: bool = True,
                     sequences: bool = False, motion: str = "random", overwrite: bool = False) -> Path:
    """Write ``num`` scenes in the NYUDv2 layout under ``out``; returns ``out``.

    Split: a seeded permutation, 80 % train / 20 % val (disjoint). ``workers`` processes
    render in parallel (default: all CPU cores). ``sequences`` also writes the neighbour
    frames t-1 / t+1 of a small known camera motion (``sequence/<id>_{prev,next}.png``) and
    the relative poses (``poses/<id>.json``: 4x4 camera-t -> neighbour transforms); read them
    with ``create_dataset("nyud", root, sequence=True)``.

    ``out`` must not exist or be an empty folder; with ``overwrite`` a non-empty folder is
    replaced whole. The set is written to a hidden folder ``.<name>.partial-<pid>`` (beside
    ``out``, or inside it when it is an existing empty folder) and moved to ``out`` when
    complete, so a failure leaves ``out`` as it was (old and new files are never mixed).
    """
    if style not in STYLES:
        raise ValueError(f"unknown style '{style}'; available: {', '.join(STYLES)}")
    if num < 2:
        raise ValueError("num must be at least 2 (train and val need one image each)")
    if motion not in MOTIONS:
        raise ValueError(f"unknown camera motion {motion!r}; choose from {', '.join(MOTIONS)}")
    shown = Path(out)
    out = shown.expanduser().resolve()  # a symlinked folder: replace what it points to
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{shown}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{shown}: folder is not empty; refusing to mix a new dataset with its files "
                              f"(--force / overwrite=True replaces it whole)")
    for parent in out.parents:  # the closest existing folder above --out must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    empty = out.is_dir() and not any(out.iterdir())
    final, out = out, (out if empty else out.parent) / f".{out.name}.partial-{os.getpid()}"
    if out.exists():
        shutil.rmtree(out)
    try:
        _write_dataset(out, num, size, seed, style, val_fraction, workers, progress, sequences, motion)
        _replace_dir(out, final)
    except OSError as e:  # name the folder the user gave, not the hidden staging folder
        shutil.rmtree(out, ignore_errors=True)
        if e.filename is not None and str(e.filename).startswith(str(out)):
            raise OSError(e.errno, e.strerror, str(shown)) from None
        raise
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return shown


def _write_dataset(out: Path, num, size, seed, style, val_fraction, workers, progress, sequences, motion) -> None:
    from .splits import seeded_split

    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    h, w = size
    K = camera_intrinsics(w, h, STYLES[style].hfov_deg)
    meta = {
        "name": "densemtl procedural indoor scenes", "num_classes": len(SYNTH_CLASSES), "class_names": list(SYNTH_CLASSES),
        "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "width": w, "height": h},
        "default_size": [h, w], "depth_range": [1e-3, 20.0], "normals_frame": "opencv (x right, y down, z forward)",
        "seed": seed, "num": num, "style": style, "style_params": asdict(STYLES[style]), "sequences": sequences, "motion": motion if sequences else None,
    }
    jobs = [(out, seed, i, (h, w), style, sequences, motion) for i in range(num)]
    workers = workers or os.cpu_count() or 1
    from tqdm import tqdm

    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
            names = list(tqdm(pool.imap(_write_one, jobs, chunksize=8), total=num, disable=not progress, desc="synth"))
    else:
        names = [_write_one(j) for j in tqdm(jobs, disable=not progress, desc="synth")]
    ids = sorted(names)
    train = seeded_split(ids, "train", seed, 1 - val_fraction)
    val = seeded_split(ids, "val", seed, 1 - val_fraction)
    (out / "gt_sets" / "train.txt").write_text("\n".join(train) + "\n")
    (out / "gt_sets" / "val.txt").write_text("\n".join(val) + "\n")
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
