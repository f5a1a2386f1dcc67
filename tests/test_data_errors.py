"""Bad data and unsafe outputs: refused with one line naming the file, never silently wrong."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_config
from data_fixtures import write_nyud
from densemtl.cli.main import main
from densemtl.data import DataError, create_dataset
from densemtl.data.io import read_rgb
from densemtl.data.synth import generate_dataset


def _tree(root):
    """Every file below ``root`` with its bytes (hidden names included)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _nyud(root, **kw):
    """``write_nyud`` plus a dataset.json (not the official NYUDv2: no check of the split sizes)."""
    write_nyud(root, **kw)
    (root / "dataset.json").write_text(json.dumps({"num_classes": 40}))
    return root


def _one_error_line(capsys, command):
    full = capsys.readouterr().err
    err = full.split("\r")[-1].strip()  # after any progress bar
    assert "Traceback" not in full and err.startswith(f"densemtl {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _checkpoint(path, root=None, num_workers=0, nan=False, num_classes=8):
    """A checkpoint of an untrained ResNet-18 MTL (S, D), with the training config
    of a tiny run on ``root`` (for ``eval``); ``nan`` fills every floating weight with NaN."""
    from omegaconf import OmegaConf

    from densemtl.config import config_from_dict
    from densemtl.engine import save_checkpoint
    from densemtl.models import create_model

    torch.manual_seed(0)
    model = create_model("mtl", "SD", num_classes=num_classes, backbone="resnet18")
    state = model.state_dict()
    if nan:
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    cfg = None
    if root is not None:
        over = {"model.name": "mtl", "data.dataset": "nyud", "data.num_workers": num_workers, "data.val_batch_size": 2, "data.limit_val": None,
                "data.size": [32, 48]}
        cfg = OmegaConf.to_container(config_from_dict(tiny_config(root, path.parent, **over)), resolve=True)
    return save_checkpoint({"model": state, "model_config": model.model_config, "config": cfg}, path)


# --- 1: data synth never overwrites or mixes -----------------------------------------------------

def test_synth_refuses_non_empty_out_and_force_replaces_whole(tmp_path, capsys, monkeypatch):
    out = tmp_path / "set"
    generate_dataset(out, num=4, size=(16, 24), seed=1, workers=1, progress=False)
    (out / "images" / "mine.png").write_bytes(b"user file")
    before = _tree(out)
    args = ["data", "synth", "--out", str(out), "--num", "3", "--size", "24x16", "--workers", "1"]
    assert main(args) == 2
    err = _one_error_line(capsys, "data")
    assert f"{out}: folder is not empty" in err and "--force" in err
    assert _tree(out) == before  # untouched
    assert main(args + ["--force"]) == 0
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == ["00000.png", "00001.png", "00002.png"]  # nothing of the old set (00003, mine.png) is left
    assert json.loads((out / "dataset.json").read_text())["num"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary sibling left behind
    # a failure while writing leaves the old dataset exactly as it was
    before = _tree(out)
    import densemtl.data.synth as synth

    real = synth.render_scene

    def failing(seed, index, *a, **k):
        if index == 2:
            raise RuntimeError("disk full")
        return real(seed, index, *a, **k)

    monkeypatch.setattr(synth, "render_scene", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(out, num=5, size=(16, 24), seed=2, workers=1, progress=False, overwrite=True)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    (tmp_path / "mount").mkdir()  # an empty folder (maybe a mount point) is written in place
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(tmp_path / "mount", num=5, size=(16, 24), seed=2, workers=1, progress=False)
    assert not list((tmp_path / "mount").iterdir())
    (tmp_path / "mount").rmdir()
    # an existing empty folder is fine without --force; a file is refused
    (tmp_path / "empty").mkdir()
    assert main(["data", "synth", "--out", str(tmp_path / "empty"), "--num", "2", "--size", "24x16", "--workers", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == sorted(p.name for p in out.iterdir())
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as e:  # refused when the command line is parsed
        main(["data", "synth", "--out", str(tmp_path / "f"), "--num", "2", "--force"])
    assert e.value.code == 2 and "is an existing file" in capsys.readouterr().err and (tmp_path / "f").read_text() == "x"
    with pytest.raises(FileExistsError, match="exists and is not a folder"):  # and by the library
        generate_dataset(tmp_path / "f", num=2, size=(16, 24), workers=1, progress=False, overwrite=True)
    assert (tmp_path / "f").read_text() == "x"


# --- 2 and 5: predict writes one set of outputs per image, never NaN -----------------------------

@pytest.mark.slow
def test_predict_same_names_in_two_folders_are_kept_apart(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "ck.pt")
    rng = np.random.default_rng(0)
    imgs = {}
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        imgs[d] = rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)
        Image.fromarray(imgs[d]).save(tmp_path / d / "x.png")
    out = tmp_path / "o"
    assert main(["predict", str(ck), str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--size", "32x32"]) == 0
    for d in ("a", "b"):
        panel = np.asarray(Image.open(out / d / "x_all.png"))
        assert np.array_equal(panel[:20, :28], imgs[d])  # each panel starts with its own input image
        assert (out / d / "x_semseg.png").is_file() and np.load(out / d / "x_depth.npy").shape == (20, 28)
    assert not list(out.glob("*.png"))
    # one folder (or one file): outputs directly in --out, as before
    assert main(["predict", str(ck), str(tmp_path / "a"), "--out", str(tmp_path / "o2"), "--size", "32x32"]) == 0
    assert (tmp_path / "o2" / "x_semseg.png").is_file()
    # two images that would still share a name are refused before anything is written
    Image.fromarray(imgs["a"]).save(tmp_path / "a" / "x.jpg")
    assert main(["predict", str(ck), str(tmp_path / "a"), "--out", str(tmp_path / "o3")]) == 2
    err = _one_error_line(capsys, "predict")
    assert "x.jpg" in err and "x.png" in err and "would both be written as x_<task>.png" in err
    assert not (tmp_path / "o3").exists()


@pytest.mark.slow
def test_predict_refuses_non_finite_outputs(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "nan.pt", nan=True)
    img = tmp_path / "x.png"
    Image.fromarray(np.full((20, 28, 3), 90, np.uint8)).save(img)
    assert main(["predict", str(ck), str(img), "--out", str(tmp_path / "o"), "--size", "32x32"]) == 2
    err = _one_error_line(capsys, "predict")
    assert f"{img}: the semseg prediction holds {8 * 20 * 28} NaN/Inf values" in err and "nan.pt" in err
    assert not list((tmp_path / "o").rglob("*"))  # nothing written


# --- 3: 16-bit grayscale images, constant images -------------------------------------------------

def test_16bit_grayscale_image_scaled_and_constant_image_flagged(tmp_path, capsys):
    v = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    Image.fromarray(v).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    expected = ((v.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
    got = read_rgb(tmp_path / "g16.png")
    assert got.dtype == np.uint8 and got.shape == (48, 64, 3)
    assert all(np.array_equal(got[..., c], expected) for c in range(3))
    root = _nyud(tmp_path / "n")
    Image.fromarray(v).save(root / "images" / "00001.png")
    img = create_dataset("nyud", root, "train", "S", size=(48, 64), augment=False).load(0)["image"]
    assert np.allclose(img[..., 1], expected / 255.0, atol=1e-6)
    Image.fromarray(v.astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f.tif: floating-point image \(PIL mode F\) has no defined value range"):
        read_rgb(tmp_path / "f.tif")
    # data verify flags an image whose pixels are all the same
    Image.fromarray(np.full((48, 64, 3), 255, np.uint8)).save(root / "images" / "00002.png")
    capsys.readouterr()
    assert main(["data", "verify", "--dataset", "nyud", "--root", str(root), "--splits", "train"]) == 1
    bad = [line for line in capsys.readouterr().out.splitlines() if "BAD" in line]
    assert len(bad) == 1 and "images/00002.png" in bad[0] and "image is constant (every pixel 255)" in bad[0]


# --- 6: edge maps and overlapping splits ---------------------------------------------------------

def test_verify_catches_bad_edge_map_and_overlapping_splits(tmp_path, capsys):
    root = _nyud(tmp_path / "n", ids_train=("00001", "00002"), ids_val=("00003",))
    soft = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))  # a soft edge map, not 0/255
    Image.fromarray(soft).save(root / "edge" / "00002.png")
    assert main(["data", "verify", "--dataset", "nyud", "--root", str(root)]) == 1
    bad = [line for line in capsys.readouterr().out.splitlines() if "BAD" in line]
    assert len(bad) == 1 and "edge/00002.png: edge map holds values other than 0 and 255" in bad[0]
    with pytest.raises(DataError, match="edge/00002.png: edge map holds values other than 0 and 255"):
        create_dataset("nyud", root, "train", "E")[1]
    np.save(root / "edge" / "00002.npy", np.full((48, 64), 0.5, np.float32))
    (root / "edge" / "00002.png").unlink()
    with pytest.raises(DataError, match=r"edge/00002.npy: edge map holds values other than 0 and 1 \(\[0.5\]"):
        create_dataset("nyud", root, "train", "E")[1]
    root = _nyud(tmp_path / "m", ids_train=("00001", "00002"), ids_val=("00001", "00002"))
    assert main(["data", "verify", "--dataset", "nyud", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"BAD {root}/gt_sets/val.txt is identical to {root}/gt_sets/train.txt (e.g. 00001, 00002)" in out
    (root / "gt_sets" / "val.txt").write_text("00002\n00004\n")
    (root / "images" / "00004.png").write_bytes((root / "images" / "00001.png").read_bytes())
    for sub, ext in (("segmentation", "png"), ("depth", "npy"), ("normals", "png"), ("edge", "png")):
        (root / sub / f"00004.{ext}").write_bytes((root / sub / f"00001.{ext}").read_bytes())
    assert main(["data", "verify", "--dataset", "nyud", "--root", str(root)]) == 1
    assert "val.txt shares 1 of its 2 ids with" in capsys.readouterr().out
    (root / "gt_sets" / "val.txt").write_text("00004\n")
    assert main(["data", "verify", "--dataset", "nyud", "--root", str(root)]) == 0


# --- 8: wrong types in dataset files -------------------------------------------------------------

@pytest.mark.parametrize("key,value,expected", [
    ("num_classes", "eight", "'num_classes' must be a positive integer, got 'eight'"),
    ("class_names", ["a", "b"], "'class_names' must be a list of num_classes = 8 names"),
    ("intrinsics", {"fx": "wide"}, "'intrinsics.fx' must be a number > 0, got 'wide'"),
    ("default_size", [32], r"'default_size' must be \[height, width\]"),
    ("depth_range", [5, 1], r"'depth_range' must be \[min, max\] in metres"),
])
def test_dataset_json_types_name_file_and_key(tmp_path, capsys, key, value, expected):
    root = write_nyud(tmp_path / "n")
    meta = {"num_classes": 8, "class_names": [str(i) for i in range(8)], key: value}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=f"dataset.json: {expected}"):
        create_dataset("nyud", root, "train", "S")
    assert main(["data", "verify", "--dataset", "nyud", "--root", str(root)]) == 2
    assert "dataset.json: " in _one_error_line(capsys, "data")


@pytest.mark.parametrize("array,dtype_shape", [
    (np.full((48, 64), "far"), "dtype <U3 shape (48, 64)"),
    (np.ones((48, 64, 2), np.float32), "dtype float32 shape (48, 64, 2)"),
    (np.ones((48, 64), np.complex64), "dtype complex64 shape (48, 64)"),
])
def test_depth_npy_of_wrong_type_names_the_file(tmp_path, array, dtype_shape):
    root = write_nyud(tmp_path / "n")
    np.save(root / "depth" / "00001.npy", array)
    with pytest.raises(DataError) as e:
        create_dataset("nyud", root, "train", "D")[0]
    assert str(e.value) == f"{root}/depth/00001.npy: depth (metres) must be a 2-D (H, W) array of numbers, got {dtype_shape}"


# --- 10: errors in DataLoader workers ------------------------------------------------------------

@pytest.mark.slow
def test_error_in_loader_worker_is_the_original_one_line(tmp_path, capsys):
    from densemtl.engine import builders

    root = write_nyud(tmp_path / "n", ids_train=("00001", "00002", "00003", "00004"), ids_val=("00005", "00006"))
    (root / "images" / "00003.png").write_bytes(b"not a png")
    np.save(root / "depth" / "00006.npy", np.full((48, 64), "x"))
    ds = create_dataset("nyud", root, "train", "SD", size=(32, 48), augment=False)
    with pytest.raises(DataError) as single:
        ds[2]
    loader, _ = builders.build_loader(ds, 1, False, 0, num_workers=2)
    with pytest.raises(DataError) as worker:
        list(loader)
    assert str(worker.value) == str(single.value) and str(single.value).startswith(f"{root}/images/00003.png: cannot read image")
    # through the CLI: the same line, whatever data.num_workers
    ck = _checkpoint(tmp_path / "ck.pt", root, num_workers=2, num_classes=40)
    lines = []
    for workers in (0, 2):
        assert main(["eval", str(ck), f"data.num_workers={workers}", "--no-boundary"]) == 2
        lines.append(_one_error_line(capsys, "eval"))
    assert lines[0] == lines[1] == f"densemtl eval: error: {root}/depth/00006.npy: depth (metres) must be a 2-D (H, W) " \
                                   "array of numbers, got dtype <U1 shape (48, 64)"


def test_unexpected_error_in_worker_names_the_sample(tmp_path, monkeypatch):
    from densemtl.data.nyud import NYUDv2
    from densemtl.engine import builders

    root = write_nyud(tmp_path / "n")

    def broken(self, i, tasks):
        raise KeyError("T_t_to_prev")

    monkeypatch.setattr(NYUDv2, "_read", broken)
    ds = create_dataset("nyud", root, "train", "S", size=(32, 48), augment=False)
    loader, _ = builders.build_loader(ds, 1, False, 0, num_workers=2)
    with pytest.raises(DataError) as e:
        next(iter(loader))
    assert str(e.value) == f"nyud sample '00001' at {root}: KeyError: 'T_t_to_prev'"


# --- 15: split lists cannot reach outside the dataset root ---------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("bad", ["../outside", "sub/../../outside", "/etc/hostname", "..\\outside"])
def test_split_ids_outside_the_root_are_refused(tmp_path, capsys, bad):
    root = write_nyud(tmp_path / "n")
    (tmp_path / "outside.png").write_bytes((root / "images" / "00001.png").read_bytes())
    (root / "gt_sets" / "train.txt").write_text(f"00001\n{bad}\n")
    with pytest.raises(DataError) as e:
        create_dataset("nyud", root, "train", "S")
    assert str(e.value).startswith(f"{root}/gt_sets/train.txt:2: id {bad!r} points outside the dataset root")
    assert main(["data", "verify", "--dataset", "nyud", "--root", str(root)]) == 2
    assert "train.txt:2: id" in _one_error_line(capsys, "data")
    (root / "gt_sets" / "train.txt").write_text("00001\nsub/00002\n")  # a sub-folder inside the root is fine
    assert len(create_dataset("nyud", root, "train", "S")) == 2
