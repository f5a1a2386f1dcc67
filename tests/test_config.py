"""Configs: composition, overrides, errors; every paper preset loads and builds."""

from pathlib import Path

import pytest
import torch

from densemtl.cli.main import main
from densemtl.config import ConfigError, load_config
from densemtl.engine.builders import build_model, dataset_info

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LEAVES = sorted(p for p in CONFIGS.rglob("*.yaml") if "_base_" not in p.parts)


def test_presets_cover_the_paper_tables():
    names = {p.relative_to(CONFIGS).as_posix() for p in LEAVES}
    for ds in ("synthia", "vkitti2", "cityscapes"):
        for ts in ("sd", "sdn"):
            for m in ("mtl", "padnet", "padnet3ways", "densemtl"):
                assert f"table1/{ds}/{ts}/{m}.yaml" in names
        for t in ("semseg", "depth", "normals"):
            assert f"table1/{ds}/stl/{t}.yaml" in names
    for ts in ("sd", "sdn", "sdne"):
        assert f"table2/nyud/{ts}/densemtl.yaml" in names
    assert "table2/nyud/stl/edges.yaml" in names
    assert len([n for n in names if n.startswith("table3/")]) == 16
    assert len([n for n in names if n.startswith("table4/")]) == 6
    assert {n for n in names if n.startswith("table5/")} == {f"table5/cityscapes/{r}.yaml" for r in ("3ways", "3ways_padnet", "3ways_mteb")}
    for src in ("synthia", "vkitti2"):  # every row of Table 6, plus the other methods
        rows = {"stl_target_semseg", "stl_target_depth", "stl_source_semseg", "stl_source_depth", "stl_uda_semseg",
                "stl_uda_depth", "mtl_target", "mtl_source", "mtl_uda", "densemtl_uda"}
        assert rows | {"padnet_uda", "padnet3ways_uda"} <= {n.split("/")[-1][:-5] for n in names if n.startswith(f"table6/{src}_cityscapes/")}


@pytest.mark.parametrize("path", LEAVES, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_preset_loads(path):
    cfg = load_config(path)
    assert cfg.experiment == path.relative_to(CONFIGS).with_suffix("").as_posix()
    assert cfg.schedule.iterations == 40000
    if "table6" in path.parts:  # the released UDA recipe: Adam, constant lr, no clipping
        assert cfg.optim.clip_grad_norm is None and list(cfg.schedule.milestones) == [] and cfg.tasks in ("S", "D", "SD")
        assert cfg.uda.adversarial == path.stem.endswith(("_uda", "_uda_semseg", "_uda_depth"))
        assert bool(cfg.uda.target.dataset) == ("_target" not in path.stem)
        if "vkitti2" in path.parts[-2]:
            assert cfg.data.options.label_set == "uda8"
            assert "_target" in path.stem or (list(cfg.data.crop) == [512, 1024] and cfg.uda.target.options.label_set == "uda8")
    else:
        assert cfg.optim.clip_grad_norm == 10.0
    if "table5" in path.parts:
        assert cfg.selfsup.enabled and cfg.tasks == "SP" and list(cfg.data.crop) == [512, 512]


@pytest.mark.parametrize("rel", ["table1/synthia/sdn/densemtl.yaml", "table2/nyud/sdne/padnet3ways.yaml",
                                 "table3/vkitti2/sd/mteb_21.yaml", "table4/vkitti2/sdn/attention_both.yaml",
                                 "table1/cityscapes/stl/normals.yaml", "table2/nyud/sd/mtl.yaml",
                                 "table5/cityscapes/3ways_mteb.yaml", "table6/vkitti2_cityscapes/densemtl_uda.yaml"])
def test_presets_build_their_model(rel):
    cfg = load_config(CONFIGS / rel, ["model.pretrained=false"])
    with torch.device("meta"):
        model = build_model(cfg, dataset_info(cfg)["num_classes"])
    assert model.model_config["name"] == cfg.model.name
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
