"""Adversarial multi-task domain adaptation in the trainer: gradient isolation, checkpoints,
exact resume, evaluation on the target domain."""

import json

import pytest
import torch
from helpers import tiny_config

from densemtl.cli.main import main
from densemtl.config import config_from_dict
from densemtl.data.synth import generate_dataset
from densemtl.engine import Trainer, load_checkpoint
from densemtl.engine.objectives import StepContext


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("uda")
    src = generate_dataset(root / "src", num=10, size=(64, 64), seed=0, workers=1, progress=False)
    tgt = generate_dataset(root / "tgt", num=10, size=(64, 64), seed=1, style="shifted", workers=1, progress=False)
    return src, tgt


def uda_config(domains, out, **over):
    src, tgt = domains
    base = {"uda.target": {"dataset": "procedural", "root": str(tgt), "limit_val": 4}, "uda.adversarial": True,
            "train.eval_every": 0, "schedule.iterations": 4}
    return tiny_config(src, out, **{**base, **over})


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.slow
def test_gradient_isolation(domains, tmp_path):
    tr = Trainer(config_from_dict(uda_config(domains, tmp_path)), run_dir=tmp_path / "run")
    adversarial = tr.objective("adversarial")
    critic = adversarial.alignment.critic
    assert len(critic.discriminators) == 2 * len(tr.model.supervised_scales)  # semseg + depth per scale
    batch = next(iter(tr.train_loader))
    tr.model.train()
    disc0, model0 = _params(critic), _params(tr.model)
    # generator step: the discriminators are frozen and get no gradient; the model does
    tr.optimizer.zero_grad(set_to_none=True)
    ctx = StepContext(batch, batch["image"], {}, {}, logs={"loss": 0.0})
    adversarial.after_backward(tr, ctx)
    out_t = ctx.extra["target_outputs"]
    assert ctx.logs["loss/adversarial"] > 0 and ctx.logs["loss"] == ctx.logs["loss/adversarial"]
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.requires_grad for p in critic.parameters())  # unfrozen again afterwards
    assert sum(float(p.grad.abs().sum()) for p in tr.model.parameters() if p.grad is not None) > 0
    tr.optimizer.step()
    after = _params(critic)
    assert all(torch.equal(disc0[k], after[k]) for k in disc0)
    # discriminator step: no model parameter (nor its gradient) changes
    model1 = _params(tr.model)
    grads = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    assert any(not torch.equal(model0[k], model1[k]) for k in model0)
    with torch.no_grad():
        out_s = tr.model(batch["image"])
    logs = adversarial.alignment.discriminator_step(out_s, out_t, batch["image"].shape[-2:])
    assert logs["loss/discriminators"] > 0
    model2 = _params(tr.model)
    assert all(torch.equal(model1[k], model2[k]) for k in model1)
    assert all(torch.equal(grads[n], p.grad) for n, p in tr.model.named_parameters() if n in grads)
    assert any(not torch.equal(after[k], v) for k, v in _params(critic).items())


@pytest.mark.slow
def test_uda_run_resumes_exactly_and_evaluates_on_the_target(domains, tmp_path, capsys):
    ref = Trainer(config_from_dict(uda_config(domains, tmp_path / "ref")))
    ref.train()
    ref_log = [json.loads(s) for s in (tmp_path / "ref/t/r/metrics.jsonl").read_text().splitlines()]
    ref_losses = [r["loss"] for r in ref_log if r["type"] == "train"]
    assert all("loss/adversarial" in r and "loss/discriminators" in r for r in ref_log if r["type"] == "train")
    ck = load_checkpoint(tmp_path / "ref/t/r/checkpoints/last.pt")
    assert ck["uda"]["optimizer"]["state"] and any("discriminators" in k for k in ck["uda"]["critic"])
    # a 4-iteration run stopped after 2 and resumed: the same losses (model, discriminators and
    # their poly decay, target stream)
    cut_tr = Trainer(config_from_dict(uda_config(domains, tmp_path / "cut")))
    cut_tr.max_iter = 2
    cut_tr.train()
    assert main(["train", "--resume", str(tmp_path / "cut/t/r")]) == 0
    cut = [json.loads(s) for s in (tmp_path / "cut/t/r/metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "loss/discriminators", "lr/discriminators", "adv/semseg/0"):
        assert [r[key] for r in cut if r["type"] == "train"] == pytest.approx([r[key] for r in ref_log if r["type"] == "train"], rel=1e-6), key
    # a resume that extends the schedule re-targets the discriminators' decay to the new length
    Trainer(config_from_dict(uda_config(domains, tmp_path / "ext", **{"schedule.iterations": 2}))).train()
    assert main(["train", "--resume", str(tmp_path / "ext/t/r"), "schedule.iterations=4"]) == 0
    ext = [json.loads(s) for s in (tmp_path / "ext/t/r/metrics.jsonl").read_text().splitlines()]
    lr3 = [r["lr/discriminators"] for r in ext if r["type"] == "train" and r["iter"] == 3][0]
    assert lr3 == pytest.approx(1e-4 * (1 - 3 / 4) ** 0.9, rel=1e-6)
    # evaluation uses the target domain's val split
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ref/t/r"), "--no-boundary", "--json", str(tmp_path / "m.json")]) == 0
    assert f"at {domains[1]} (" in capsys.readouterr().out  # the target's root
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m["metrics"]) == {"semseg", "depth"}


def test_uda_config_errors(domains, tmp_path):
    with pytest.raises(ValueError, match="needs a target domain"):
        config_from_dict(tiny_config(domains[0], tmp_path, **{"uda.adversarial": True}))
    with pytest.raises(ValueError, match="uda.target.nope"):
        config_from_dict(uda_config(domains, tmp_path, **{"uda.target": {"dataset": "procedural", "root": str(domains[1]), "nope": 1}}))
    from data_fixtures import write_cityscapes

    write_cityscapes(tmp_path / "cs", split="val")
    with pytest.raises(ValueError, match=r"source procedural has \d+ classes but target cityscapes has 16"):
        Trainer(config_from_dict(uda_config(domains, tmp_path, **{"train.eval_every": 2, "uda.adversarial": False, "uda.target": {
            "dataset": "cityscapes", "root": str(tmp_path / "cs")}})), run_dir=tmp_path / "x")


def test_table6_layout_delta_against_stl_uda():
    from densemtl.engine.report import build_table, to_markdown

    def run(model, tasks, setting, miou=None, rmse=None, seed=0):
        uda = {"target": {"dataset": "cityscapes" if setting != "target" else None}, "adversarial": setting == "uda"}
        cfg = {"data": {"dataset": "synthia" if setting != "target" else "cityscapes"}, "tasks": tasks, "uda": uda,
               "model": {"name": model, "backbone": "resnet101", "options": {}}}
        metrics = {}
        if miou is not None:
            metrics["semseg"] = {"mIoU": miou}
        if rmse is not None:
            metrics["depth"] = {"rmse": rmse}
        return {"dir": f"{model}-{tasks}-{setting}-{seed}", "config": cfg, "metrics": metrics, "iter": 1, "class_names": None}

    runs = [run("stl", "S", "uda", miou=30.0), run("stl", "D", "uda", rmse=10.0),
            run("stl", "S", "source", miou=25.0), run("stl", "D", "source", rmse=12.0),
            run("mtl", "SD", "uda", miou=33.0, rmse=9.0), run("mtl", "SD", "uda", miou=35.0, rmse=9.5, seed=1),
            run("densemtl", "SD", "source", miou=27.0, rmse=11.0), run("stl", "S", "target", miou=60.0)]
    uda8 = run("stl", "S", "target", miou=80.0)  # the other benchmark's oracle (8 classes): a row of its own
    uda8["config"]["data"]["options"] = {"label_set": "uda8"}
    runs.append(uda8)
    table = build_table(runs)
    rows = {(r["dataset"], r["setting"], r["method"]): r for r in table["rows"]}
    mtl = rows[("synthia→cityscapes", "UDA", "MTL")]
    # Delta_SD vs STL-UDA, per seed then mean: ((33-30)/30 + (10-9)/10)/2 and ((35-30)/30 + (10-9.5)/10)/2
    expected = [100 * ((33 - 30) / 30 + (10 - 9) / 10) / 2, 100 * ((35 - 30) / 30 + (10 - 9.5) / 10) / 2]
    assert mtl["delta"][0] == pytest.approx(sum(expected) / 2)
    dense = rows[("synthia→cityscapes", "source-only", "DenseMTL")]
    assert dense["delta"][0] == pytest.approx(100 * ((27 - 30) / 30 + (10 - 11) / 10) / 2)
    stl_src = rows[("synthia→cityscapes", "source-only", "STL")]
    assert stl_src["tasks"] == ["semseg", "depth"] and stl_src["delta"][0] == pytest.approx(100 * ((25 - 30) / 30 + (10 - 12) / 10) / 2)
    assert rows[("synthia→cityscapes", "UDA", "STL")]["delta"] is None
    md = to_markdown(table)
    assert md.splitlines()[0].startswith("Protocol: standard (") and md.splitlines()[1].startswith("| dataset | setting | method |") and "| cityscapes | supervised | STL |" in md
    assert "vs STL-UDA" in md and "| cityscapes [uda8] | supervised | STL |" in md
    assert rows[("cityscapes", "", "STL")]["metrics"]["semseg"] == (60.0, 0.0)


UDA_DDP_SCRIPT = """
import os, sys, torch, yaml
from densemtl.config import config_from_dict
from densemtl.engine import Trainer
tr = Trainer(config_from_dict(yaml.safe_load(open(sys.argv[1]))), run_dir=sys.argv[2])
tr.train()
if int(os.environ.get("RANK", "0")) == 0:
    torch.save({"model": tr.model.state_dict(), "critic": tr.objective("adversarial").alignment.critic.state_dict()}, sys.argv[3])
"""


@pytest.mark.slow
def test_uda_two_processes_equal_one_process(domains, tmp_path):
    """DDP: model and discriminators (own DDP wrapper) reduce their gradients across processes."""
    import yaml
    from helpers import run_one_and_two_processes

    # padnet: no dropout (per-process dropout masks would differ from one process's); S-N:
    # berHu's threshold is a statistic of the (per-process) batch. One step: the discriminators'
    # Adam turns rounding differences of near-zero gradients into lr-sized steps, which a second
    # step would carry into the model. uda.scales [0] is a subset: heads left out of the alignment.
    common = {"model.name": "padnet", "tasks": "SN", "loss.options": {"weights": {"semseg": 1.0, "normals": 1.0}},
              "train.freeze_bn": True, "schedule.iterations": 1, "uda.scales": [0], "train.checkpoint_every": 0,
              "optim.name": "sgd", "optim.lr_backbone": 0.01, "optim.lr_decoder": 0.01, "uda.weight": 1.0}
    script = tmp_path / "ddp.py"
    script.write_text(UDA_DDP_SCRIPT)
    single, multi = tmp_path / "single.yaml", tmp_path / "multi.yaml"
    single.write_text(yaml.safe_dump(uda_config(domains, tmp_path / "s", **common, **{"data.batch_size": 2})))
    multi.write_text(yaml.safe_dump(uda_config(domains, tmp_path / "m", **common, **{"data.batch_size": 1})))
    run_one_and_two_processes(script, single, multi, tmp_path, port_base=29600)
    a, b = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "multi.pt")
    for k in a["model"]:
        if a["model"][k].is_floating_point():
            torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    keys = [k for k in a["critic"] if k.endswith("original")]
    diff = torch.cat([(a["critic"][k] - b["critic"][k]).abs().flatten() for k in keys])
    moved = torch.cat([(a["critic"][k] - b["critic"][k]).flatten() for k in keys])
    assert float((diff > 1e-6).float().mean()) < 1e-3, float((diff > 1e-6).float().mean())
    assert moved.numel() > 0


def test_discriminator_step_skips_overflowed_maps():
    from densemtl.uda.alignment import AdversarialAlignment

    al = AdversarialAlignment(["semseg", "depth"], [0], num_classes=3, max_steps=10)
    before = _params(al.critic)
    good = {"semseg": {0: torch.randn(2, 3, 32, 32)}, "depth": {0: torch.rand(2, 1, 32, 32) * 50}}
    bad = {"semseg": {0: torch.full((2, 3, 32, 32), float("inf"))}, "depth": good["depth"]}
    logs = al.discriminator_step(good, bad, (32, 32))
    assert logs["loss/discriminators"] != logs["loss/discriminators"]  # NaN: skipped
    assert all(torch.equal(before[k], v) for k, v in _params(al.critic).items())
    assert al.discriminator_step(good, good, (32, 32))["loss/discriminators"] > 0
    assert any(not torch.equal(before[k], v) for k, v in _params(al.critic).items())
