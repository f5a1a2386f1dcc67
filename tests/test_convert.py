"""Conversion of the authors' released checkpoints (issue 9, converter part).

State dicts are built here in the documented format (``../shared/reference/official-checkpoints.md``:
ResNet-101 with torchvision names, 3-ways decoders, mTEB at scale 1) with random values, once per
module. ``authors_forward`` re-implements the authors' network from that description alone
(torchvision encoder, functional decoders and xTAM) as an independent check of the converted model.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from densemtl.cli.main import main
from densemtl.interop.official import (
    ConversionError, detect_order, export_official, from_official, infer_layout, read_official,
)
from densemtl.models import model_from_config

from helpers import SHARED

NC = 8  # the procedural test dataset (NYUDv2 layout) has 8 classes
CONV_BLOCKS = {2: (256, 1280), 3: (256, 256), 5: (256, 768), 6: (128, 256), 8: (128, 384), 9: (128, 128),
               11: (128, 192), 12: (64, 128), 13: (64, 64)}
OUT = {"semseg": NC, "depth": 1, "normals": 3}
# the order of sources in each target's fusion layer in the SDN file (non-canonical for semseg and normals)
SDN_ORDER = {"semseg": ("normals", "depth"), "depth": ("semseg", "normals"), "normals": ("depth", "semseg")}


# --- the documented format -------------------------------------------------------------------
def _bn(p, c):
    return [(f"{p}.weight", (c,)), (f"{p}.bias", (c,)), (f"{p}.running_mean", (c,)), (f"{p}.running_var", (c,)),
            (f"{p}.num_batches_tracked", ())]


def authors_layout(tasks, num_classes):
    """``[(key, shape)]`` of an authors' DenseMTL file (ResNet-101, mTEB at scale 1), in file order."""
    import torchvision

    with torch.device("meta"):
        tv = torchvision.models.resnet101(replace_stride_with_dilation=[False, False, True])
    spec = [(f"backbone.encoder.{k}", tuple(v.shape)) for k, v in tv.state_dict().items() if not k.startswith("fc.")]
    heads, mteb = [], []
    for t in tasks:
        d = f"heads.{t}.decoder"
        for i in range(4):
            heads.append((f"{d}.0.convs.{i}.0.weight", (256, 2048, 1 if i == 0 else 3, 1 if i == 0 else 3)))
            heads += _bn(f"{d}.0.convs.{i}.1", 256)
        heads.append((f"{d}.0.convs.4.1.weight", (256, 2048, 1, 1)))
        heads += _bn(f"{d}.0.convs.4.2", 256)
        heads.append((f"{d}.0.project.0.weight", (256, 1280, 1, 1)))
        heads += _bn(f"{d}.0.project.1", 256)
        for i, (co, ci) in CONV_BLOCKS.items():
            heads += [(f"{d}.{i}.block.0.conv.weight", (co, ci, 3, 3)), (f"{d}.{i}.block.0.conv.bias", (co,))]
        c = num_classes if t == "semseg" else OUT[t]
        heads += [(f"{d}.14.weight", (c, 64, 1, 1)), (f"{d}.14.bias", (c,)), (f"{d}.15.weight", (c, 128, 1, 1)),
                  (f"{d}.15.bias", (c,))]
    for t in tasks:
        p = f"m.{t}.1"
        others = [s for s in tasks if s != t]
        for s in others:
            mteb += [(f"{p}.extract_{s}.0.weight", (128, 128, 3, 3)), (f"{p}.extract_{s}.0.bias", (128,))]
        for s in others:
            mteb += [(f"{p}.SA_{s}.attention.0.weight", (64, 128, 3, 3)), (f"{p}.SA_{s}.conv.weight", (64, 128, 3, 3))]
        for s in others:
            mteb.append((f"{p}.SxTAM_{s}.alpha", (1, 128, 1, 1)))
            for c in ("conv_b", "conv_c", "conv_d"):
                mteb += [(f"{p}.SxTAM_{s}.{c}.0.weight", (128, 128, 1, 1))] + _bn(f"{p}.SxTAM_{s}.{c}.1", 128)
        for s in others:
            mteb += [(f"{p}.proj_{s}.0.weight", (128, 192, 1, 1))] + _bn(f"{p}.proj_{s}.1", 128)
        mteb += [(f"{p}.post.0.weight", (128, 128 * len(others), 1, 1))] + _bn(f"{p}.post.1", 128)
    return spec + heads + mteb


def make_authors_state_dict(tasks, num_classes=NC, seed=0, aliases=True):
    """Random values of sane scale (fan-in normalised convs, positive variances, alpha != 0)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, std, mean=0.0):  # faster than randn for ~100 M values
        a = std * math.sqrt(3.0)
        return torch.empty(shape).uniform_(mean - a, mean + a, generator=g)

    sd = {}
    for k, shape in authors_layout(tasks, num_classes):
        if k.endswith("num_batches_tracked"):
            v = torch.randint(1, 10**5, (), generator=g)
        elif k.endswith("running_var"):
            v = uniform(shape, 0.3, 1.0)
        elif k.endswith(".alpha"):
            v = uniform(shape, 0.5)
        elif len(shape) == 4:
            v = uniform(shape, 1.0 / math.sqrt(shape[1] * shape[2] * shape[3]))
        elif re.search(r"(bn\d|downsample\.1|\.\d)\.weight$", k):  # BatchNorm scale
            v = uniform(shape, 0.15, 0.75)
        else:
            v = uniform(shape, 0.1)
        sd[k] = v
    if aliases:
        for k in list(sd):
            fam, t, rest = k.split(".", 2)
            if fam in ("heads", "m"):
                sd[f"params.{t}.{0 if fam == 'heads' else 1}.{rest}"] = sd[k]
    return sd


# --- the authors' forward, from the description alone ------------------------------------------
def authors_forward(sd, x, tasks, order):
    """``{task: {0: full-res output, 1: half-res output}}`` of the authors' network (eval mode);
    ``order[T]``: the sources of T's fusion layer in the file's order."""
    import torchvision

    tv = torchvision.models.resnet101(replace_stride_with_dilation=[False, False, True]).eval()
    missing = tv.load_state_dict({k[17:]: v for k, v in sd.items() if k.startswith("backbone.encoder.")}, strict=False)
    assert sorted(missing.missing_keys) == ["fc.bias", "fc.weight"] and not missing.unexpected_keys

    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)

    def cbr(h, p, **kw):  # Sequential(conv no bias, BN, ReLU)
        return F.relu(bn(F.conv2d(h, sd[f"{p}.0.weight"], **kw), f"{p}.1"))

    def block(h, p):  # reflection pad + 3x3 conv + ELU
        return F.elu(F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), sd[f"{p}.block.0.conv.weight"], sd[f"{p}.block.0.conv.bias"]))

    def up(h):
        return h.repeat_interleave(2, 2).repeat_interleave(2, 3)

    def aspp(h, p):
        outs = [cbr(h, f"{p}.convs.0")] + [cbr(h, f"{p}.convs.{i}", padding=r, dilation=r) for i, r in ((1, 6), (2, 12), (3, 18))]
        pooled = F.relu(bn(F.conv2d(h.mean((2, 3), keepdim=True), sd[f"{p}.convs.4.1.weight"]), f"{p}.convs.4.2"))
        outs.append(F.interpolate(pooled, size=h.shape[-2:], mode="bilinear", align_corners=False))
        return cbr(torch.cat(outs, 1), f"{p}.project")

    def xtam(ft, fs, p, s):
        g = F.relu(F.conv2d(fs, sd[f"{p}.extract_{s}.0.weight"], sd[f"{p}.extract_{s}.0.bias"], padding=1))
        sa = F.conv2d(g, sd[f"{p}.SA_{s}.conv.weight"], padding=1) * torch.sigmoid(F.conv2d(g, sd[f"{p}.SA_{s}.attention.0.weight"], padding=1))
        q = cbr(ft[..., ::4, ::4], f"{p}.SxTAM_{s}.conv_b")
        k = cbr(F.max_pool2d(g, 4), f"{p}.SxTAM_{s}.conv_c")
        v = cbr(F.max_pool2d(g, 4), f"{p}.SxTAM_{s}.conv_d")
        b, c, hq, wq = q.shape
        a = torch.softmax(q.flatten(2).transpose(1, 2) @ k.flatten(2) / math.sqrt(c), -1)  # (B, Nq, Nk)
        o = (v.flatten(2) @ a.transpose(1, 2)).view(b, c, hq, wq)
        o = o.repeat_interleave(4, 2).repeat_interleave(4, 3) * sd[f"{p}.SxTAM_{s}.alpha"]
        return cbr(torch.cat([sa, o], 1), f"{p}.proj_{s}")

    with torch.no_grad():
        e = tv
        stem = e.relu(e.bn1(e.conv1((x - 0.45) / 0.225)))
        l1 = e.layer1(e.maxpool(stem))
        l2 = e.layer2(l1)
        l3 = e.layer3(l2)
        l4 = e.layer4(l3)
        h = {}
        for t in tasks:
            d = f"heads.{t}.decoder"
            y = block(torch.cat([aspp(l4, f"{d}.0"), l3], 1), f"{d}.2")
            y = block(torch.cat([up(block(y, f"{d}.3")), l2], 1), f"{d}.5")
            y = block(torch.cat([up(block(y, f"{d}.6")), l1], 1), f"{d}.8")
            h[t] = block(torch.cat([up(block(y, f"{d}.9")), stem], 1), f"{d}.11")
        out = {t: {1: F.conv2d(h[t], sd[f"heads.{t}.decoder.15.weight"], sd[f"heads.{t}.decoder.15.bias"])} for t in tasks}
        for t in tasks:
            p = f"m.{t}.1"
            fused = h[t] + cbr(torch.cat([xtam(h[t], h[s], p, s) for s in order[t]], 1), f"{p}.post")
            d = f"heads.{t}.decoder"
            y = block(up(block(fused, f"{d}.12")), f"{d}.13")
            out[t][0] = F.conv2d(y, sd[f"{d}.14.weight"], sd[f"{d}.14.bias"])
    return out


# --- fixtures ----------------------------------------------------------------------------------
def _converted(tasks, order):
    sd = make_authors_state_dict(tasks, seed=len(tasks))
    state, mc, info = from_official(sd, source_order=order)
    model = model_from_config(mc).eval()
    model.load_state_dict(state, strict=True)
    return {"sd": sd, "state": state, "mc": mc, "info": info, "model": model, "tasks": tasks, "order": order}


@pytest.fixture(scope="module")
def sd_case():
    return _converted(("semseg", "depth"), None)


@pytest.fixture(scope="module")
def sdn_case():
    return _converted(("semseg", "depth", "normals"), {t: list(o) for t, o in SDN_ORDER.items()})


def _x(seed=0, h=32, w=48):
    # one small image per forward, of the test dataset's size: the CPU convolutions compile
    # once per input shape, and the weights (~100 M) dominate the time anyway
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _forward(model, x):
    with torch.no_grad():
        return model(x)


# --- tests -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_builder_matches_the_reference_document(sd_case):
    doc = SHARED / "reference" / "official-checkpoints.md"
    if not doc.is_file():
        pytest.skip(f"{doc} not found")
    text = doc.read_text()
    sections = text.split("### S-D-N")
    assert len(sections) == 2

    def listed(part):
        out = {}
        for line in part.splitlines():
            m = re.fullmatch(r"(\S+) \(([\d, ]*)\) (float32|int64)", line.strip())
            if m:
                out[m.group(1)] = (tuple(int(v) for v in m.group(2).replace(" ", "").split(",") if v), m.group(3))
        return out

    def ours(tasks, aliases):
        spec = dict(authors_layout(tasks, 40))
        if aliases:
            spec.update({f"params.{k.split('.')[1]}.{0 if k.startswith('heads') else 1}.{k.split('.', 2)[2]}": v
                         for k, v in list(spec.items()) if k.startswith(("heads.", "m."))})
        dt = {k: "int64" if k.endswith("num_batches_tracked") else "float32" for k in spec}
        return {k: (tuple(v), dt[k]) for k, v in spec.items()}

    sd_doc, sdn_doc = listed(sections[0]), listed(sections[1])
    sd_ours = ours(("semseg", "depth"), True)
    assert sd_doc == {k: v for k, v in sd_ours.items() if not k.startswith("backbone.")}
    assert sum(k.startswith("backbone.") for k in sd_ours) == int(re.search(r"backbone.encoder.\*\s+\((\d+) tensors", text).group(1))
    sdn_ours = ours(("semseg", "depth", "normals"), False)
    assert sdn_doc == {k: v for k, v in sdn_ours.items() if k.startswith("m.")}
    # the generated values have the documented dtypes
    g = sd_case["sd"]
    assert {v.dtype for k, v in g.items() if k.endswith("num_batches_tracked")} == {torch.int64}
    assert {v.dtype for k, v in g.items() if not k.endswith("num_batches_tracked")} == {torch.float32}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sd_case", "sdn_case"])
def test_inferred_layout_and_recorded_options(case, request):
    c = request.getfixturevalue(case)
    mc = c["mc"]
    assert mc["name"] == "densemtl" and mc["backbone"] == "resnet101" and mc["num_classes"] == NC
    assert tuple(mc["tasks"]) == c["tasks"]
    assert mc["options"]["input_norm"] == "authors" and mc["options"]["mteb_scales"] == [1]
    assert mc["options"]["fusion"] == "add" and mc["options"]["supervised_scales"] == [0, 1]
    assert c["info"]["layout"]["aliases"] is True
    # every model tensor filled from the file: each key of the model in the converted state dict
    assert set(c["state"]) == set(c["model"].state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sd_case", "sdn_case"])
def test_strict_round_trip_gives_identical_tensors(case, request):
    c = request.getfixturevalue(case)
    back = export_official(c["model"].state_dict(), c["mc"], source_order=c["info"]["source_order"], aliases=True)
    sd = c["sd"]
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k
    # aliases are the same tensors, as in a real state dict
    assert back["params.depth.0.decoder.14.weight"] is back["heads.depth.decoder.14.weight"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sd_case", "sdn_case"])
def test_converted_model_matches_an_independent_reimplementation(case, request):
    c = request.getfixturevalue(case)
    x = _x(1)
    ours = _forward(c["model"], x)
    order = c["info"]["source_order"]
    ref = authors_forward(c["sd"], x, c["tasks"], order)
    for t in c["tasks"]:
        for s in (0, 1):
            r = ref[t][s]
            rel = float((ours[t][s] - r).abs().max() / (r.max() - r.min()))
            assert ours[t][s].shape == r.shape
            assert rel < 1e-4, (t, s, rel)


@pytest.mark.slow
def test_alpha_zero_ignores_the_correlation_branch(sd_case):
    model = sd_case["model"]
    corr = [m for n, m in model.named_modules() if n.endswith(".corr")]
    assert len(corr) == 2

    def perturb():
        with torch.no_grad():
            for m in corr:
                for proj in (m.query, m.key, m.value):
                    proj[0].weight.mul_(-3.0)

    # as converted (alpha != 0), the correlation projections matter: one xTAM, random features
    xtam = model.exchanges["1"].xtam["semseg"]["depth"]
    f_t, f_s = torch.randn(1, 128, 16, 16), torch.randn(1, 128, 16, 16)
    try:
        with torch.no_grad():
            before = xtam(f_t, f_s)
            perturb()
            assert not torch.allclose(before, xtam(f_t, f_s))
        model.load_state_dict(sd_case["state"])
        # alpha = 0: the whole model's outputs ignore them
        with torch.no_grad():
            for m in corr:
                m.alpha["spatial"].zero_()
        x = _x(2)
        a = _forward(model, x)
        perturb()
        b = _forward(model, x)
        for t in model.tasks:
            assert torch.equal(a[t][0], b[t][0])
    finally:
        model.load_state_dict(sd_case["state"])


@pytest.mark.slow
def test_source_order_changes_the_output_only_through_the_fusion_layer(sdn_case):
    sd, model = sdn_case["sd"], sdn_case["model"]
    swapped = {**SDN_ORDER, "semseg": ("depth", "normals")}
    state_b, _, _ = from_official(sd, source_order=swapped)
    state_a = sdn_case["state"]
    differ = sorted(k for k in state_a if not torch.equal(state_a[k], state_b[k]))
    assert differ == ["exchanges.1.fuse.semseg.0.weight"]
    wa, wb = state_a[differ[0]], state_b[differ[0]]
    assert torch.equal(wa[:, :128], wb[:, 128:]) and torch.equal(wa[:, 128:], wb[:, :128])
    seen = {}

    def hook(name):
        def fn(mod, inp, out):
            seen.setdefault(name, []).append((inp[0].clone(), out.clone()))
        return fn

    hooks = [model.exchanges["1"].fuse[t].register_forward_hook(hook(t)) for t in model.tasks]
    x = _x(3)
    try:
        a = _forward(model, x)
        model.load_state_dict(state_b)
        b = _forward(model, x)
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(state_a)
    (ia, oa), (ib, ob) = seen["semseg"]
    assert torch.equal(ia, ib) and not torch.allclose(oa, ob)  # same input, different fusion output
    assert not torch.allclose(a["semseg"][0], b["semseg"][0])
    for t in ("depth", "normals"):
        assert torch.equal(a[t][0], b[t][0])
    for t in model.tasks:
        assert torch.equal(a[t][1], b[t][1])  # scale 1 is predicted before the mTEB


@pytest.mark.slow
def test_detect_order_recovers_the_order_of_the_file(sdn_case, capsys):
    """Labels = the predictions of the file's true orders (sharpened segmentation logits):
    the true order of every target gives the lowest loss."""
    from densemtl.losses import code_to_depth

    sd, model, x = dict(sdn_case["sd"]), sdn_case["model"], _x(4)
    for k in ("heads.semseg.decoder.14.weight", "heads.semseg.decoder.14.bias"):
        sd[k] = sd[k] * 30.0
        sd["params.semseg.0." + k.split(".", 2)[2]] = sd[k]
    head = model.decoders["semseg"].heads["0"]
    try:
        with torch.no_grad():
            head.weight.mul_(30.0)
            head.bias.mul_(30.0)
        out = _forward(model, x)
    finally:
        model.load_state_dict(sdn_case["state"])
    depth = code_to_depth(out["depth"][0])
    labels = {"semseg": out["semseg"][0].argmax(1),
              "depth": torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth)),
              "normals": F.normalize(out["normals"][0], dim=1)}
    best, rows = detect_order(sd, [{"image": x, "labels": labels}], device="cpu")
    assert best == SDN_ORDER
    assert len(rows) == 2
    printed = capsys.readouterr().out
    assert "semseg <- normals,depth" in printed and "<- kept" in printed


# --- errors ----------------------------------------------------------------------------------------
def test_file_errors_name_the_file(tmp_path, sd_case, capsys):
    f = tmp_path / "list.pkl"
    torch.save([1, 2, 3], f)
    with pytest.raises(ConversionError, match=r"list\.pkl: not a state dict"):
        read_official(f)
    f2 = tmp_path / "mixed.pkl"
    torch.save({"a": torch.zeros(1), "epoch": 3}, f2)
    with pytest.raises(ConversionError, match=r"mixed\.pkl: not a state dict.*\n\s+epoch"):
        read_official(f2)
    f3 = tmp_path / "trunc.pkl"
    torch.save({k: v for k, v in list(sd_case["sd"].items())[:20]}, f3)
    data = f3.read_bytes()
    f3.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=r"trunc\.pkl: cannot read the file .*truncated or corrupt"):
        read_official(f3)
    assert main(["convert", "official", str(f3), "--out", str(tmp_path / "x.pt")]) == 2
    assert "trunc.pkl: cannot read the file" in capsys.readouterr().err
    f4 = tmp_path / "padnet.pkl"
    torch.save({"backbone.conv1.weight": torch.zeros(1), "heads.semseg.weight": torch.zeros(1)}, f4)
    assert main(["convert", "official", str(f4), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "padnet.pkl: keys of an unknown architecture" in err and "backbone.conv1.weight" in err
    assert not (tmp_path / "x.pt").exists()


def test_unknown_architecture_keys_are_listed(sd_case):
    sd = sd_case["sd"]
    with pytest.raises(ConversionError, match="unknown architecture"):
        from_official({"encoder.conv1.weight": torch.zeros(1), "decoder.0.weight": torch.zeros(1)})
    extra = {**sd, "m.semseg.1.CxTAM_depth.weight": torch.zeros(3), "heads.depth.decoder.16.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"2 key\(s\) of the file have no place.*\n.*CxTAM_depth") as e:
        from_official(extra)
    assert "heads.depth.decoder.16.weight" in str(e.value)
    with pytest.raises(ConversionError, match=r"outside backbone.encoder"):
        from_official({**sd, "discriminator.fc.weight": torch.zeros(1)})
    with pytest.raises(ConversionError, match=r"mTEB at decoder scale\(s\) \[0\]"):
        from_official({**sd, "m.semseg.0.post.0.weight": torch.zeros(1)})


@pytest.mark.slow
def test_missing_keys_shapes_and_aliases_are_listed(sd_case):
    sd = dict(sd_case["sd"])
    del sd["m.depth.1.post.1.running_var"], sd["params.depth.1.1.post.1.running_var"]
    with pytest.raises(ConversionError, match=r"1 key\(s\) the model needs are missing.*\n\s+m\.depth\.1\.post\.1\.running_var"):
        from_official(sd)
    sd = dict(sd_case["sd"])
    sd["params.semseg.1.1.SxTAM_depth.alpha"] = sd["params.semseg.1.1.SxTAM_depth.alpha"] + 1
    with pytest.raises(ConversionError, match=r"alias\(es\) differ.*\n\s+params\.semseg\.1\.1\.SxTAM_depth\.alpha"):
        from_official(sd)
    sd = dict(sd_case["sd"])
    del sd["params.semseg.0.decoder.13.block.0.conv.bias"]
    with pytest.raises(ConversionError, match=r"alias key\(s\) are missing.*\n\s+params\.semseg\.0\.decoder\.13"):
        from_official(sd)
    sd = dict(sd_case["sd"])
    sd["m.depth.1.proj_semseg.0.weight"] = torch.zeros(128, 256, 1, 1)
    with pytest.raises(ConversionError, match=r"(?s)shape mismatch.*proj_semseg\.0\.weight: file \(128, 256, 1, 1\)"):
        from_official(sd)
    # without the params.* family the file still converts, and exports back without it
    plain = {k: v for k, v in sd_case["sd"].items() if not k.startswith("params.")}
    state, mc, info = from_official(plain)
    assert info["layout"]["aliases"] is False
    assert set(export_official(state, mc, aliases=False)) == set(plain)


def test_class_count_tasks_and_order_disagreements(sd_case, sdn_case):
    with pytest.raises(ConversionError, match=r"class count mismatch.*8 classes.*\(8, 64, 1, 1\).*--num-classes says 19"):
        infer_layout(sd_case["sd"], num_classes=19)
    assert infer_layout(sd_case["sd"], num_classes=NC).num_classes == NC
    with pytest.raises(ConversionError, match="--tasks asks for semseg, depth, normals"):
        infer_layout(sd_case["sd"], tasks="SDN")
    with pytest.raises(ConversionError, match="fusion 'concat' does not match"):
        infer_layout(sd_case["sd"], fusion="concat")
    for bad, msg in ((["semseg=depth"], "must list each of depth, normals once"), (["S"], "must look like"),
                     (["edges=S,D"], "'edges' is not a task")):
        with pytest.raises(ConversionError, match=msg):
            from_official(sdn_case["sd"], source_order=bad)
    # letters work, and the canonical order is the default
    s1, _, _ = from_official(sdn_case["sd"], source_order=["S=D,N"])
    s2, _, _ = from_official(sdn_case["sd"])
    assert torch.equal(s1["exchanges.1.fuse.semseg.0.weight"], s2["exchanges.1.fuse.semseg.0.weight"])


def test_export_refuses_models_the_authors_code_cannot_express(sd_case):
    mc = {**sd_case["mc"], "options": {**sd_case["mc"]["options"], "input_norm": "imagenet"}}
    with pytest.raises(ConversionError, match="input_norm"):
        export_official(sd_case["state"], mc)


# --- command line ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_convert_then_eval_predict_and_init_from(sd_case, synth_root, tmp_path, capsys):
    from densemtl.config import config_from_dict
    from densemtl.engine import builders, check_model_config, load_checkpoint
    from densemtl.engine.checkpoint import CheckpointError

    src, ck = tmp_path / "nyud_densemtl_SD.pkl", tmp_path / "converted.pt"
    torch.save(sd_case["sd"], src)
    assert main(["convert", "official", str(src), "--out", str(ck), "--dataset", "nyud", "--source-order", "S=D"]) == 0
    out = capsys.readouterr().out
    assert "input_norm=authors" in out and "tasks semseg,depth" in out
    assert main(["convert", "official", str(src), "--out", str(tmp_path / "y.pt"), "--num-classes", "19"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "class count mismatch" in err
    assert main(["eval", str(ck), f"data.root={synth_root}", "data.num_workers=0", "data.limit_val=2", "--no-boundary",
                 "--batch-size", "1"]) == 0
    assert "semseg: mIoU" in capsys.readouterr().out.replace("  ", " ")
    img = sorted((synth_root / "images").iterdir())[0]
    assert main(["predict", str(ck), str(img), "--out", str(tmp_path / "pred"), "--size", "32x48"]) == 0
    assert (tmp_path / "pred" / f"{img.stem}_depth.npy").is_file()
    # train.init_from: what the trainer does with the checkpoint
    ckpt = load_checkpoint(ck)
    cfg = config_from_dict({"tasks": "SD", "model": {"name": "densemtl", "backbone": "resnet101",
                                                     "options": {"input_norm": "authors"}}})
    with torch.device("meta"):
        model = builders.build_model(cfg, NC)
        plain = builders.build_model(config_from_dict({"tasks": "SD"}), NC)
    check_model_config(ckpt, model.model_config, "init_from checkpoint")
    model.load_state_dict(ckpt["model"], strict=True, assign=True)
    with pytest.raises(CheckpointError, match="input_norm"):
        check_model_config(ckpt, plain.model_config, "init_from checkpoint")
    assert ckpt["converted_from"]["file"] == src.name and ckpt["converted_from"]["source_order_origin"] == "given"
    # end to end: `densemtl train CONFIG --init-from` adopts input_norm=authors from the checkpoint
    import yaml

    cfg_file = tmp_path / "ft.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "experiment": "ft", "run_name": "r", "output_dir": str(tmp_path / "runs"), "tasks": "SD",
        "model": {"name": "densemtl", "backbone": "resnet101"},
        "data": {"dataset": "procedural", "root": str(synth_root), "batch_size": 2, "num_workers": 0, "limit_train": 2},
        "optim": {"name": "sgd", "lr_backbone": 0.0, "lr_decoder": 0.0, "momentum": 0.0, "weight_decay": 0.0},
        "schedule": {"iterations": 1}, "train": {"eval_every": 0, "progress": False}}))
    assert main(["train", str(cfg_file), "--init-from", str(ck)]) == 0
    assert "model.options.input_norm='authors'" in capsys.readouterr().out
    run_ck = load_checkpoint(tmp_path / "runs/ft/r/checkpoints/last.pt")
    assert run_ck["model_config"]["options"]["input_norm"] == "authors"
    params = {n for n, _ in model.named_parameters()}
    assert all(torch.equal(run_ck["model"][k], ckpt["model"][k]) for k in params)  # lr 0: the converted weights


@pytest.mark.slow
def test_cli_detect_order_and_back_to_the_authors_format(sdn_case, synth_root, tmp_path, capsys):
    src, ck, back = tmp_path / "f.pkl", tmp_path / "f.pt", tmp_path / "back.pkl"
    torch.save(sdn_case["sd"], src)
    assert main(["convert", "official", str(src), "--out", str(ck), "--dataset", "procedural", "--detect-order", str(synth_root),
                 "--detect-images", "1"]) == 0
    out = capsys.readouterr().out
    assert "source order detection on 1 image(s)" in out and "(detected)" in out
    # whatever order was detected, it is recorded and written back
    assert main(["convert", "to-official", str(ck), "--out", str(back)]) == 0
    sd = torch.load(back, weights_only=True)
    assert set(sd) == set(sdn_case["sd"]) and all(torch.equal(sd[k], v) for k, v in sdn_case["sd"].items())
