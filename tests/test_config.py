"""Configs: composition, overrides, errors; every paper preset loads and builds."""

import re
from pathlib import Path

import pytest
import torch

from densemtl.cli.main import main
from densemtl.config import ConfigError, config_from_dict, load_config
from densemtl.engine.builders import build_model, dataset_info

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# run configs; configs/study/ holds study descriptions (tests/test_study.py loads them)
LEAVES = sorted(p for p in CONFIGS.rglob("*.yaml") if "_base_" not in p.parts and p.relative_to(CONFIGS).parts[0] != "study")


def test_presets_cover_the_paper_tables():
    names = {p.relative_to(CONFIGS).as_posix() for p in LEAVES}
    for ds in ("synthia", "vkitti2", "cityscapes"):
        for ts in ("sd", "sdn"):
            for m in ("mtl", "padnet", "padnet3ways", "densemtl"):
                assert f"table1/{ds}/{ts}/{m}.yaml" in names
            assert (f"table1/{ds}/{ts}/densemtl_released.yaml" in names) == (ds == "cityscapes")
        for t in ("semseg", "depth", "normals"):
            assert f"table1/{ds}/stl/{t}.yaml" in names
    for ts in ("sd", "sdn", "sdne"):
        assert f"table2/nyud/{ts}/densemtl.yaml" in names
    assert "table2/nyud/stl/edges.yaml" in names
    assert len([n for n in names if n.startswith("table3/")]) == 16
    assert len([n for n in names if n.startswith("table4/")]) == 6
    assert {n for n in names if n.startswith("table5/")} == {f"table5/cityscapes/{r}.yaml" for r in ("3ways_plain", "3ways_padnet", "3ways_mteb")}
    for src in ("synthia", "vkitti2"):  # every row of Table 6, plus the other methods
        rows = {"stl_target_semseg", "stl_target_depth", "stl_source_semseg", "stl_source_depth", "stl_uda_semseg",
                "stl_uda_depth", "mtl_target", "mtl_source", "mtl_uda", "densemtl_uda"}
        assert rows | {"padnet_uda", "padnet3ways_uda"} <= {n.split("/")[-1][:-5] for n in names if n.startswith(f"table6/{src}_cityscapes/")}


@pytest.mark.slow
@pytest.mark.parametrize("path", LEAVES, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_preset_loads(path):
    cfg = load_config(path)
    assert cfg.experiment == path.relative_to(CONFIGS).with_suffix("").as_posix()
    assert cfg.schedule.iterations == (90000 if "table6" in path.parts else 40000)
    if "table6" in path.parts:  # the released UDA recipe: Adam (0.9, 0.98), constant lr, no clipping, 90k
        assert cfg.optim.clip_grad_norm is None and list(cfg.schedule.milestones) == [] and cfg.tasks in ("S", "D", "SD")
        assert cfg.optim.name == "adam" and list(cfg.optim.betas) == [0.9, 0.98]
        assert (cfg.optim.lr_backbone, cfg.optim.lr_decoder) == (1.5e-5, 2.5e-4)
        assert cfg.eval.depth_median_scaling is True  # Table 6 depth metrics (and its Delta) are median-scaled
        assert cfg.uda.adversarial == path.stem.endswith(("_uda", "_uda_semseg", "_uda_depth"))
        assert bool(cfg.uda.target.dataset) == ("_target" not in path.stem)
        # the source uses its whole set (the released src_split: all); the oracle trains on Cityscapes train
        assert cfg.data.train_split == ("train" if "_target" in path.stem else "all")
        if cfg.uda.adversarial:  # the released alignment: mean over pairs, min-max depth map, unit normals, flip
            assert (cfg.uda.reduction, cfg.uda.depth_map, cfg.uda.normals_map, cfg.uda.flip) == ("mean", "minmax", "unit", True)
            assert (cfg.uda.weight, cfg.uda.lr, list(cfg.uda.betas), cfg.uda.power) == (0.005, 1e-4, [0.9, 0.99], 0.9)
        if "vkitti2" in path.parts[-2]:
            assert cfg.data.options.label_set == "uda8"
            assert "_target" in path.stem or (list(cfg.data.crop) == [512, 1024] and cfg.uda.target.options.label_set == "uda8")
    else:
        assert cfg.optim.clip_grad_norm == 10.0
    table = path.relative_to(CONFIGS).parts[0]
    if table in ("table1", "table2", "table3", "table4"):  # the authors' protocol and backbone
        assert cfg.protocol == "paper" and cfg.model.pretrained == "resnet101.tv_in1k"
        assert cfg.model.options.input_norm == "authors" and cfg.model.backbone == "resnet101"
        assert cfg.train.select_scale == (1 if cfg.model.name == "densemtl" else None)
    else:
        # Table 5 starts from Hoyer et al.'s converted model (train.init_from), the others from ImageNet
        assert cfg.protocol == "standard" and cfg.model.pretrained is (table != "table5")
    if table == "table4" and path.stem.startswith("attention_"):  # 4b was run with concat fusion
        assert cfg.model.options.fusion == "concat" and cfg.model.options.attention == path.stem.split("_")[1]
    if cfg.model.name == "densemtl" and table in ("table1", "table2", "table3", "table4"):
        released = path.stem.endswith("_released")
        assert released == (table == "table1" and "cityscapes" in path.parts and path.stem == "densemtl_released")
        assert (cfg.optim.lr_backbone, cfg.optim.lr_decoder) == ((1e-5, 1e-4) if released else (2e-4, 3e-4))
    if "table5" in path.parts:  # the released recipe (configs/cityscapes/monodepth/resnet101_ours_SD.yml there)
        assert cfg.selfsup.enabled and cfg.tasks == "SP" and list(cfg.data.crop) == [512, 512]
        assert cfg.data.size is None and cfg.data.dataset == "cityscapes"  # crops of the 1024x512 frames
        assert cfg.data.train_split == "train" and "label_subset" not in cfg.data.options  # the full labelled set
        assert cfg.optim.name == "adam" and list(cfg.optim.betas) == [0.9, 0.999]
        assert (cfg.optim.lr_backbone, cfg.optim.lr_decoder, cfg.selfsup.lr_pose) == (1e-5, 5e-5, 1e-6)
        assert list(cfg.schedule.milestones) == [30000] and cfg.schedule.gamma == 0.1
        assert cfg.model.options.disparity_head == "conv3x3" and cfg.model.options.input_norm == "authors"
        assert list(cfg.model.options.supervised_scales) == [0, 1, 2, 3] and list(cfg.selfsup.supervised_scales) == [0, 2]
        assert cfg.train.init_from.endswith(".pt") and list(cfg.train.init_parts) == ["encoder", "decoders", "posenet"]
        assert cfg.train.init_decoder_source == "disparity"


@pytest.mark.slow
@pytest.mark.parametrize("rel", ["table1/synthia/sdn/densemtl.yaml", "table2/nyud/sdne/padnet3ways.yaml",
                                 "table1/cityscapes/sdn/densemtl_released.yaml",
                                 "table3/vkitti2/sd/mteb_21.yaml", "table4/vkitti2/sdn/attention_both.yaml",
                                 "table1/cityscapes/stl/normals.yaml", "table2/nyud/sd/mtl.yaml",
                                 "table5/cityscapes/3ways_mteb.yaml", "table6/vkitti2_cityscapes/densemtl_uda.yaml"])
def test_presets_build_their_model(rel):
    cfg = load_config(CONFIGS / rel, ["model.pretrained=false"])
    with torch.device("meta"):
        model = build_model(cfg, dataset_info(cfg)["num_classes"])
    assert model.model_config["name"] == cfg.model.name
    if not rel.startswith(("table5", "table6")):
        assert model.input_norm == "authors"
    if rel.startswith("table3"):
        assert model.mteb_scales == (1, 2)


def test_overrides_and_unknown_keys(tmp_path):
    cfg = load_config(CONFIGS / "table1/synthia/sd/densemtl.yaml", ["optim.lr_decoder=1e-4", "model.options.mteb_scales=[1,2]"])
    assert cfg.optim.lr_decoder == 1e-4 and list(cfg.model.options.mteb_scales) == [1, 2]
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lr_decodr'.*Did you mean optim.lr_decoder.*Valid keys:"):
        load_config(None, ["optim.lr_decodr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  roots: x\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'data.roots' in .*bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr_decoder"])
    with pytest.raises(ConfigError, match="tasks"):
        load_config(None, ["tasks=SXQ"])


def test_cli_reports_config_errors_without_traceback(capsys, tmp_path):
    assert main(["train", str(CONFIGS / "table1/synthia/sd/densemtl.yaml"), "optim.lr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lr'" in err and "Traceback" not in err
    assert main(["train", str(CONFIGS / "table1/synthia/sd/densemtl.yaml"), f"data.root={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "nowhere does not exist" in err and "docs/datasets.md" in err


# --- every key: type and range checked at load (issue: values were used unchecked) -----------------
from densemtl.config import VALID_KEYS  # noqa: E402

# keys whose only constraint is their type (booleans, free-form sections, paths, names)
RANGELESS = {
    "experiment", "run_name", "output_dir", "model.pretrained", "model.options", "data.root", "data.augment",
    "data.options", "loss.options", "train.activation_checkpointing", "train.deterministic", "train.sync_bn", "train.freeze_bn",
    "train.progress", "train.init_from", "train.init_depth_bias", "selfsup.enabled", "selfsup.pose_pretrained",
    "selfsup.init_pose", "uda.target.root", "uda.target.augment", "uda.target.options", "uda.adversarial",
    "uda.flip", "eval.edge_boundary", "eval.all_scales", "eval.depth_median_scaling",
}
# a value of the right kind outside the key's range or allowed values
OUT_OF_RANGE = {
    "seed": -1, "tasks": "SXQ", "protocol": "authors", "train.select_scale": 7, "model.name": "nope", "model.backbone": "no_such_net",
    "data.dataset": "nope",
    "data.size": [30, 40], "data.batch_size": 0, "data.val_batch_size": 0, "data.num_workers": -1,
    "data.scale_crop": [-1.0, 1.5], "data.crop": [0, 16], "data.train_split": "nope", "data.val_split": "nope",
    "data.limit_train": 0, "data.limit_val": 0, "loss.weighting": "nope", "optim.name": "rmsprop",
    "optim.lr_backbone": -1e-4, "optim.lr_decoder": -1, "optim.betas": [0.9, 1.0], "optim.momentum": 1.5,
    "optim.weight_decay": -0.1, "optim.clip_grad_norm": -1.0, "schedule.iterations": 0, "schedule.milestones": [0],
    "schedule.gamma": -3, "train.log_every": -1, "train.eval_every": -1, "train.checkpoint_every": -1,
    "train.image_every": -1, "train.amp": "fp32", "train.channels_last": "on", "train.compile": "yes",
    "optim.fused": "always", "train.select_metric": "semseg/foo", "train.init_parts": [], "train.init_decoder_source": "nope",
    "selfsup.pose_source": "nope", "selfsup.pose_backbone": "no_such_net", "selfsup.smoothness": -1.0,
    "selfsup.disparity_scales": [5], "selfsup.supervised_scales": [-1], "selfsup.lr_pose": -1.0,
    "uda.target.dataset": "nope", "uda.target.size": [30, 40], "uda.target.crop": [16, 0],
    "uda.target.train_split": "nope", "uda.target.val_split": "nope", "uda.target.limit_train": 0,
    "uda.target.limit_val": 0, "uda.weight": -1.0, "uda.scales": [7], "uda.lr": -1.0, "uda.betas": [1.0, 0.9],
    "uda.power": -1.0, "uda.depth_ref": 0.0, "uda.reduction": "median", "uda.depth_map": "nope",
    "uda.normals_map": "nope", "eval.num_thresholds": 0,
}
WRONG_TYPES = [{"x": 1}, "abc", [["a"]], 1.5, True, -7]
CONTEXT = {"uda.target": ["uda.target.dataset=nyud"]}  # target keys are checked against a target dataset


def _dotlist(key, value):
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _refused(key, value):
    """``None`` if the config loads, else the ConfigError's message (anything else fails the test)."""
    ctx = [o for prefix, opts in CONTEXT.items() if key.startswith(prefix + ".") and key != "uda.target.dataset" for o in opts]
    try:
        load_config(None, ["model.backbone=resnet18", *ctx, _dotlist(key, value)])
    except ConfigError as e:
        return str(e)
    return None


def test_every_key_is_covered_by_the_fuzz_tables():
    assert set(OUT_OF_RANGE) | RANGELESS == set(VALID_KEYS)
    assert not set(OUT_OF_RANGE) & RANGELESS


@pytest.mark.slow
@pytest.mark.parametrize("key", VALID_KEYS)
def test_fuzz_wrong_type_and_out_of_range_name_the_key(key):
    refused = 0
    for value in WRONG_TYPES + ([OUT_OF_RANGE[key]] if key in OUT_OF_RANGE else []):
        msg = _refused(key, value)
        if msg is None:
            continue
        refused += 1
        assert key in msg and ("got" in msg or f"{key}=" in msg) and "\n" not in msg, (value, msg)
    assert refused >= 1, f"{key}: no wrong-type value was refused"
    if key in OUT_OF_RANGE:
        msg = _refused(key, OUT_OF_RANGE[key])
        assert msg is not None, f"{key}={OUT_OF_RANGE[key]!r} was accepted"
    # the same through a Python dict (config_from_dict), e.g. a checkpoint's stored config
    d: dict = {}
    node = d
    *path, last = key.split(".")
    for p in path:
        node = node.setdefault(p, {})
    node[last] = {"x": 1} if key not in RANGELESS or not key.endswith("options") else "abc"
    if key.startswith("uda.target.") and key != "uda.target.dataset":
        d["uda"]["target"]["dataset"] = "nyud"
    with pytest.raises(ConfigError, match=re.escape(key)):
        config_from_dict(d)


def test_issue_examples_are_refused_at_load_with_the_key(tmp_path, capsys):
    for override, needle in [("optim.lr_decoder=-1", "optim.lr_decoder: expected a number >= 0, got -1"),
                             ("schedule.gamma=-3", "schedule.gamma: expected a number in (0, 1], got -3"),
                             ("schedule.milestones=abc", "schedule.milestones: expected a list of integers >= 1, got 'abc'"),
                             ("schedule.iterations=abc", "schedule.iterations: expected an integer >= 1, got 'abc'"),
                             ("optim.betas=0.9", "optim.betas: expected a list of 2 numbers in [0, 1), got 0.9"),
                             ("train.select_metric=semseg/foo", "train.select_metric: semseg reports mIoU, pixel_acc")]:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"output_dir: {tmp_path / 'runs'}\nmodel: {{backbone: resnet18}}\ndata: {{root: {tmp_path}}}\n")
        assert main(["train", str(cfg), override]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "runs").exists()  # refused before anything is created
    # integral floats are integers (1e4), and the normalised value is what the run uses
    cfg = load_config(None, ["schedule.iterations=1e4"])
    assert cfg.schedule.iterations == 10000 and isinstance(cfg.schedule.iterations, int)
    # a metric the meter reports only with an option: the error says which option
    with pytest.raises(ConfigError, match=r"edges reports f1 \(odsF/oisF need eval.edge_boundary=true\)"):
        load_config(None, ["tasks=SE", "train.select_metric=edges/odsF"])
    assert load_config(None, ["tasks=SE", "train.select_metric=edges/odsF", "eval.edge_boundary=true"])


def test_free_form_options_are_checked_by_their_owner():
    with pytest.raises(ConfigError, match=r"model.options.mteb_scales: expected a list of integers, got 'abc'"):
        load_config(None, ["model.options.mteb_scales=abc"])
    with pytest.raises(ConfigError, match=r"model.options.foo: unknown option of model 'densemtl'.*fusion='add'"):
        load_config(None, ["model.options.foo=1"])
    with pytest.raises(ConfigError, match=r"loss.options.temperature: unknown option of weighting 'fixed'"):
        load_config(None, ["loss.options.temperature=2"])
    assert load_config(None, ["loss.weighting=dwa", "loss.options.temperature=3"]).loss.options.temperature == 3
    with pytest.raises(ConfigError, match=r"data.options.size: set data.size instead"):
        load_config(None, ["data.options.size=[64,64]"])
    with pytest.raises(ConfigError, match=r"uda.target.options.label_set: dataset 'cityscapes' has label sets"):
        load_config(None, ["uda.target.dataset=cityscapes", "uda.target.options.label_set=nope"])
    # values checked where they are consumed name their key too
    with pytest.raises(ConfigError, match=r"model.options.fusion must be one of \('add', 'prod', 'concat'\), got 'foo'"):
        with torch.device("meta"):
            build_model(load_config(None, ["model.backbone=resnet18", "model.options.fusion=foo"]), 8)
    # a negative task weight would be gradient ascent on that task
    from densemtl.engine.builders import build_weighting

    with pytest.raises(ValueError, match=r"loss.options.weights.semseg: expected a number >= 0, got -1"):
        build_weighting(load_config(None, ["loss.options.weights={semseg: -1, depth: 1}"]))


def test_presets_are_what_generate_py_writes(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_presets", CONFIGS / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    monkeypatch.setattr(gen, "HERE", tmp_path)
    gen.main()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml"))
    assert written and all((CONFIGS / p).read_text() == (tmp_path / p).read_text() for p in written), \
        "configs/ differ from `python configs/generate.py`: run it"
