"""ONNX export: onnxruntime (CPU) against PyTorch eval mode, ResNet-18 DenseMTL, random weights."""

import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from densemtl.cli.main import main  # noqa: E402
from densemtl.engine.checkpoint import save_checkpoint  # noqa: E402
from densemtl.export import ExportModule, explicit_attention, export_onnx, parse_size  # noqa: E402
from densemtl.models import create_model  # noqa: E402
from densemtl.models.xtam import CorrelationAttention  # noqa: E402

SIZE = (64, 80)
SECOND = (96, 48)
TOL = 1e-4


def build(tasks: str, seed: int = 0):
    """Random ResNet-18 DenseMTL whose attention branch and BatchNorm statistics matter."""
    torch.manual_seed(seed)
    model = create_model("densemtl", tasks, num_classes=5, backbone="resnet18")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CorrelationAttention):  # alpha starts at 0, which hides the attention
                for p in m.alpha.values():
                    p.normal_(0, 0.5)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def sdn(tmp_path_factory):
    model = build("SDN")
    path = save_checkpoint({"model": model.state_dict(), "model_config": model.model_config},
                           tmp_path_factory.mktemp("export") / "sdn.pt")
    return model, path


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def io_shapes(sess):
    dims = lambda v: [d if isinstance(d, int) else str(d) for d in v.shape]  # noqa: E731
    return {v.name: dims(v) for v in sess.get_inputs()}, {v.name: dims(v) for v in sess.get_outputs()}


def compare(model, sess, batch, size, seed=0):
    """Max abs difference onnxruntime vs PyTorch of every output (<= TOL); the ORT outputs."""
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed))
    wrapper = ExportModule(model).eval()
    with torch.no_grad():
        ref = wrapper(x)
    got = sess.run(list(wrapper.output_names), {"image": x.numpy()})
    diffs = {n: float((torch.from_numpy(g) - r).abs().max()) for n, g, r in zip(wrapper.output_names, got, ref)}
    assert all(d <= TOL for d in diffs.values()), diffs
    return {n: torch.from_numpy(g) for n, g in zip(wrapper.output_names, got)}


@pytest.mark.slow
def test_cli_export_fixed_size(sdn, tmp_path, capsys):
    model, ckpt = sdn
    out = tmp_path / "sub" / "sdn.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--size", "64x80"]) == 0
    assert "semseg_logits: 1 x 5 x 64 x 80" in capsys.readouterr().out
    sess = session(out)
    inputs, outputs = io_shapes(sess)
    assert inputs == {"image": [1, 3, 64, 80]}
    assert outputs == {"semseg_logits": [1, 5, 64, 80], "depth": [1, 1, 64, 80], "normals": [1, 3, 64, 80]}
    got = compare(model, sess, 1, SIZE)
    # evaluated predictions: metres and unit vectors
    assert (got["depth"] > 0).all()
    assert torch.allclose(got["normals"].norm(dim=1), torch.ones(1, *SIZE), atol=1e-5)


@pytest.mark.slow
def test_dynamic_export_second_size(sdn, tmp_path):
    model, _ = sdn
    out = tmp_path / "dyn.onnx"
    info = export_onnx(model, out, SIZE, dynamic=True)
    assert info["fused_attention"] and model.training is False
    sess = session(out)
    inputs, outputs = io_shapes(sess)
    assert inputs == {"image": ["batch", 3, "height", "width"]}
    assert outputs["normals"] == ["batch", 3, "height", "width"]
    compare(model, sess, 1, SIZE)
    assert compare(model, sess, 2, SECOND, seed=1)["semseg_logits"].shape == (2, 5, *SECOND)


@pytest.mark.slow
def test_explicit_attention_fallback_with_edges(tmp_path):
    # opset 13: the TorchScript exporter has no SDPA translation, the explicit formula is used
    model = build("SE", seed=1)
    out = tmp_path / "se.onnx"
    info = export_onnx(model, out, SIZE, opset=13)
    assert not info["fused_attention"]
    assert all(m.fused for m in model.modules() if isinstance(m, CorrelationAttention))  # restored
    sess = session(out)
    assert list(io_shapes(sess)[1]) == ["semseg_logits", "edges"]
    edges = compare(model, sess, 1, SIZE)["edges"]
    assert ((edges >= 0) & (edges <= 1)).all()


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    model = build("SD", seed=2)
    out = tmp_path / "dynamo.onnx"
    info = export_onnx(model, out, SIZE, exporter="dynamo")
    assert info["opset"] == 20 and info["fused_attention"]
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
    sess = session(out)
    assert io_shapes(sess)[1]["depth"] == [1, 1, 64, 80]
    compare(model, sess, 1, SIZE)


def test_dynamo_output_dims_renamed(tmp_path):
    # the dynamo exporter names output sizes by formulas of the input's; they are renamed
    import onnx
    from onnx import TensorProto, helper

    from densemtl.export.onnx import _name_output_dims

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("depth", TensorProto.FLOAT, ["batch", 3, "16*(((height - 1)//16)) + 16", "s7"])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["depth"])], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    _name_output_dims(path)
    dims = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]


def test_explicit_attention_context_restores_flags():
    model = build("SD")
    mods = [m for m in model.modules() if isinstance(m, CorrelationAttention)]
    mods[0].fused = False  # a non-default flag is restored as it was
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref = ExportModule(model)(x)
        with explicit_attention(model):
            assert not any(m.fused for m in mods)
            alt = ExportModule(model)(x)
    assert [m.fused for m in mods] == [False] + [True] * (len(mods) - 1)
    for a, b in zip(ref, alt):
        assert (a - b).abs().max() <= 1e-4


def test_parse_size():
    assert parse_size("448x576") == (448, 576)
    assert parse_size(" 512X1024 ") == (512, 1024)
    with pytest.raises(ValueError, match="nearest valid size is 448x576"):
        parse_size("450x570")
    for bad in ("448", "448x", "ax576", "-16x32", "0x16"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.slow
def test_cli_errors(sdn, tmp_path, capsys):
    _, ckpt = sdn
    out = str(tmp_path / "x.onnx")
    cases = [
        (["--size", "60x80"], "nearest valid size is 64x80"),
        (["--size", "64by80"], "HxW"),
        ([], "records no training size"),
        (["--size", "64x80", "--opset", "9"], "opsets 11 to 20"),
    ]
    for extra, msg in cases:
        assert main(["export", str(ckpt), "--onnx", out, *extra]) == 2
        assert msg in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), "--onnx", out, "--size", "64x80"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    torch.save({"weights": 1}, tmp_path / "other.pt")
    assert main(["export", str(tmp_path / "other.pt"), "--onnx", out, "--size", "64x80"]) == 2
    assert "not a densemtl checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
