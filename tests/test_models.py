"""Every registered model builds, runs forward + backward, and keeps the output contract."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from densemtl.models import count_parameters, create_model, list_models, model_from_config
from densemtl.tasks import canonical_tasks

TASK_SETS = ["SD", "SDN", "SDNE"]


def _check_forward_backward(model, h=32, w=48):
    x = torch.rand(2, 3, h, w)
    out = model(x)
    assert list(out) == list(model.tasks)
    loss = 0
    for t, preds in out.items():
        assert sorted(preds) == sorted(model.supervised_scales)
        for s, p in preds.items():
            assert p.shape == (2, model.channels[t], h >> s, w >> s), (t, s, p.shape)
            assert torch.isfinite(p).all()
            loss = loss + p.float().square().mean()
    loss.backward()
    # timm zero-initialises the last BN of each residual block, so only the stem of the
    # encoder is sure to get gradient at init; everything after the encoder must
    assert model.encoder.body.conv1.weight.grad.abs().sum() > 0
    # (the correlation projections are cut off while alpha == 0, by design)
    skip = ("encoder.", ".corr.query", ".corr.key", ".corr.value")
    grads = [p.grad for n, p in model.named_parameters() if not any(k in n or n.startswith(k) for k in skip)]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "resnet101"])
@pytest.mark.parametrize("tasks", TASK_SETS)
@pytest.mark.parametrize("name", [m for m in list_models()])
def test_every_model_builds_and_trains(name, tasks, backbone):
    torch.manual_seed(0)
    task_list = canonical_tasks({"S": "semseg", "D": "depth", "N": "normals", "E": "edges"}[c] for c in tasks)
    groups = [[t] for t in task_list] if name == "stl" else [task_list]
    for g in groups:
        if name == "stl" and backbone == "resnet101" and g[0] not in ("semseg",) and tasks != "SDNE":
            continue  # stl for each task runs once per backbone (SDNE covers all four)
        model = create_model(name, g, num_classes=5, backbone=backbone).train()
        _check_forward_backward(model)


@pytest.mark.slow
def test_encoder_channels_and_stride():
    m = create_model("densemtl", "SD", num_classes=3, backbone="resnet18")
    assert m.encoder.channels == [64, 64, 128, 256, 512]
    feats = m.encoder(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 48), (16, 24), (8, 12), (4, 6), (4, 6)]
    with torch.device("meta"):
        assert create_model("mtl", "SD", num_classes=3).encoder.channels == [64, 256, 512, 1024, 2048]


def test_input_size_error_names_nearest_valid_size():
    m = create_model("densemtl", "SD", num_classes=3, backbone="resnet18")
    with pytest.raises(ValueError, match=r"65x90.*nearest valid size is 64x96"):
        m(torch.rand(1, 3, 65, 90))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m(torch.rand(1, 1, 64, 64))


def test_canonical_task_order_and_same_state_dict():
    torch.manual_seed(0)
    a = create_model("densemtl", ["normals", "depth", "semseg"], num_classes=4, backbone="resnet18")
    torch.manual_seed(0)
    b = create_model("densemtl", ["semseg", "depth", "normals"], num_classes=4, backbone="resnet18")
    assert a.tasks == ("semseg", "depth", "normals")
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_options_and_errors():
    with pytest.raises(TypeError, match="valid options: .*mteb_scales"):
        create_model("densemtl", "SD", num_classes=3, backbone="resnet18", mteb_scale=[1])
    with pytest.raises(ValueError, match="exactly one task"):
        create_model("stl", "SD", num_classes=3, backbone="resnet18")
    with pytest.raises(ValueError, match="num_classes is required"):
        create_model("mtl", "SD", backbone="resnet18")
    with pytest.raises(KeyError, match="known models: stl, mtl"):
        create_model("ours", "SD", num_classes=3)
    with pytest.raises(ValueError, match="subset of"):
        create_model("densemtl", "SD", num_classes=3, backbone="resnet18", mteb_scales=[0])
    with pytest.raises(ValueError, match="at least two tasks"):
        create_model("densemtl", "S", num_classes=3, backbone="resnet18")
    single = create_model("densemtl", "S", num_classes=3, backbone="resnet18", mteb_scales=[])
    assert len(single.exchanges) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "opts",
    [
        dict(fusion="prod"), dict(fusion="concat"), dict(attention="channel"), dict(attention="both"),
        dict(self_attention=False), dict(correlation_attention=False), dict(alpha=False),
        dict(kv_downscale="s2"), dict(mteb_scales=[1, 2, 3, 4]), dict(mteb_scales=[]),
    ],
)
def test_densemtl_variants_run(opts):
    torch.manual_seed(0)
    m = create_model("densemtl", "SDN", num_classes=4, backbone="resnet18", **opts)
    with torch.no_grad():  # as after some training: the correlation branch is switched on
        for n, p in m.named_parameters():
            if "alpha" in n:
                p.uniform_(0.5, 1.0)
    _check_forward_backward(m, 32, 32)


class _Constant(torch.nn.Module):
    """Stands in for a fusion conv: records its input, returns a constant map."""

    def __init__(self, value: float, channels: int):
        super().__init__()
        self.value, self.channels, self.seen = value, channels, None

    def forward(self, x):
        self.seen = x
        return torch.full((x.shape[0], self.channels, *x.shape[-2:]), self.value)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["add", "prod", "concat"])
def test_fusion_add_adds_prod_multiplies_concat_has_no_residual(fusion):
    m = create_model("densemtl", "SD", num_classes=4, backbone="resnet18", fusion=fusion).eval()
    block = m.exchanges["1"]
    assert block.fuse["semseg"][0].in_channels == (2 if fusion == "concat" else 1) * 128
    for t in block.tasks:
        block.fuse[t] = _Constant(2.0, 128)
    torch.manual_seed(0)
    feats = {"semseg": torch.randn(1, 128, 8, 8), "depth": torch.randn(1, 128, 8, 8)}
    out = block(feats)
    expected = {"add": feats["semseg"] + 2.0, "prod": feats["semseg"] * 2.0, "concat": torch.full_like(feats["semseg"], 2.0)}
    assert torch.equal(out["semseg"], expected[fusion])
    seen = block.fuse["semseg"].seen  # concat feeds the target's own features first, then the directional ones
    assert seen.shape[1] == (256 if fusion == "concat" else 128)
    if fusion == "concat":
        assert torch.equal(seen[:, :128], feats["semseg"])


def test_model_from_config_rebuilds_same_architecture():
    m = create_model("densemtl", "SDN", num_classes=7, backbone="resnet18", mteb_scales=[1, 3], fusion="prod")
    r = model_from_config(m.model_config)
    assert list(r.state_dict()) == list(m.state_dict())
    assert count_parameters(r) == count_parameters(m)


SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from densemtl.models import create_model
    torch.manual_seed(0)
    tasks = sys.argv[1]
    m = create_model("densemtl", tasks, num_classes=5, backbone="resnet18", mteb_scales=[1, 2]).eval()
    sd = torch.load(sys.argv[2])
    m.load_state_dict(sd)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = m(x)
    torch.save({"keys": list(m.state_dict()), "out": out}, sys.argv[3])
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("tasks", ["SDN", "SDNE"])
def test_same_outputs_across_hash_seeds(tmp_path, tasks):
    torch.manual_seed(0)
    m = create_model("densemtl", tasks, num_classes=5, backbone="resnet18", mteb_scales=[1, 2])
    with torch.no_grad():  # make alpha non-zero so the correlation path matters
        for n, p in m.named_parameters():
            if "alpha" in n:
                p.normal_()
    torch.save(m.state_dict(), tmp_path / "w.pt")
    (tmp_path / "run.py").write_text(SCRIPT)
    results = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = tmp_path / f"out{seed}.pt"
        subprocess.run([sys.executable, str(tmp_path / "run.py"), tasks, str(tmp_path / "w.pt"), str(out)], check=True, env=env)
        results.append(torch.load(out))
    a, b = results
    assert a["keys"] == b["keys"]
    for t in a["out"]:
        for s in a["out"][t]:
            assert torch.equal(a["out"][t][s], b["out"][t][s])


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_depth_heads_start_at_a_plausible_depth(name):
    from densemtl.losses import code_to_depth

    torch.manual_seed(0)
    m = create_model(name, ["depth"] if name == "stl" else ["semseg", "depth"], num_classes=3, backbone="resnet18").eval()
    layers = m.prediction_layers()["depth"]
    assert layers and all(float(c.bias) == pytest.approx(65.4705, rel=1e-4) for c in layers)
    with torch.no_grad():
        d = code_to_depth(m(torch.rand(1, 3, 32, 32))["depth"][0])
    assert 2.0 < float(d.median()) < 50.0
