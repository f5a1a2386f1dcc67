"""Speed settings: the automatic choices from the hardware, and that every fast path computes
the same numbers as the eager fp32 reference."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from densemtl.engine import fastpath
from densemtl.losses import create_weighting, task_losses
from densemtl.models import create_model


def _train_cfg(fused="auto", **kw):
    return OmegaConf.create({"train": {"amp": "auto", "channels_last": "auto", "compile": "auto", **kw},
                             "optim": {"fused": fused}})


def _proc_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def test_native_bf16_of_this_cpu_agrees_with_proc_cpuinfo():
    flags = _proc_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    assert fastpath.native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert ("avx2" in fastpath.cpu_flags()) == ("avx2" in flags)


@pytest.mark.parametrize("flags, amp, cl", [
    ({"avx2", "fma"}, None, False),                      # AVX2 only: no bf16 kernels -> fp32, contiguous
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16", True),  # Zen 4 / Cooper Lake
    ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, "bf16", True),  # Sapphire Rapids
    ({"avx2", "avx512f", "avx512bw"}, None, False),      # AVX-512 without BF16: emulated, not chosen
])
def test_auto_follows_the_cpu_features(monkeypatch, flags, amp, cl):
    monkeypatch.setattr(fastpath, "cpu_flags", lambda: frozenset(flags))
    fast = fastpath.resolve(_train_cfg(), torch.device("cpu"))
    assert (fast.amp, fast.channels_last, fast.compile) == (amp, cl, False)
    # each switch overrides the automatic choice
    off = fastpath.resolve(_train_cfg(amp=None, channels_last=False), torch.device("cpu"))
    assert (off.amp, off.channels_last) == (None, False)
    forced = fastpath.resolve(_train_cfg(amp="bf16", channels_last=True), torch.device("cpu"))
    assert (forced.amp, forced.channels_last) == ("bf16", True)
    assert fastpath.resolve(_train_cfg(amp="fp16"), torch.device("cpu")).channels_last
    # the ISA level recorded with every run (env.json, the study's host column)
    want = {frozenset({"avx2", "fma"}): "avx2", frozenset({"avx2", "avx512f", "avx512_bf16"}): "avx512_bf16",
            frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile"}): "amx_bf16",
            frozenset({"avx2", "avx512f", "avx512bw"}): "avx512f"}
    assert fastpath.cpu_isa() == want[frozenset(flags)]


def test_cuda_auto_uses_native_bf16_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(fastpath, "compiler_available", lambda device: True)
    fast = fastpath.resolve(_train_cfg(), torch.device("cuda"))
    assert (fast.amp, fast.channels_last, fast.compile) == ("bf16", True, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    fast = fastpath.resolve(_train_cfg(), torch.device("cuda"))  # emulated only (pre-Ampere)
    assert (fast.amp, fast.channels_last) == (None, False)


def test_compile_without_a_compiler_warns_and_runs_eagerly(monkeypatch):
    monkeypatch.setattr(fastpath, "compiler_available", lambda device: False)
    with pytest.warns(UserWarning, match="train.compile=true but torch.compile has no code generator"):
        assert fastpath.resolve(_train_cfg(compile=True), torch.device("cpu")).compile is False


def test_compiled_wrapper_falls_back_when_compilation_fails(monkeypatch):
    def broken_compile(module, **kw):
        def run(*a, **k):
            raise RuntimeError("C++ compile error: cannot find cc1plus")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    net = create_model("densemtl", ("semseg", "depth"), num_classes=5, backbone="resnet18").eval()
    wrapped = fastpath.CompiledOrEager(net)
    x = torch.rand(1, 3, 32, 48)
    with pytest.warns(UserWarning, match="torch.compile failed .*cannot find cc1plus.*running eagerly"):
        out = wrapped(x)
    torch.testing.assert_close(out["depth"][0], net(x)["depth"][0], rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later calls: eager, no second warning
        wrapped(x)
    assert set(wrapped.state_dict()) == set(net.state_dict())  # no wrapper prefix
    # an error of the model itself (bad input size) is raised, not swallowed
    fresh = fastpath.CompiledOrEager(net)
    with pytest.raises(ValueError, match="not a multiple of 16"):
        fresh(torch.rand(1, 3, 30, 48))


def test_fused_optimizer_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not fastpath.resolve(_train_cfg(), cpu).fused  # auto: off on CPU (docs/performance.md)
    assert fastpath.resolve(_train_cfg(fused=True), cpu).fused
    assert fastpath.resolve(_train_cfg(amp=None, compile=False), cuda).fused
    assert not fastpath.resolve(_train_cfg(amp=None, compile=False, fused=False), cuda).fused
    monkeypatch.setattr(fastpath, "fused_kernel_devices", lambda: {"cpu"})
    assert not fastpath.resolve(_train_cfg(amp=None, compile=False), cuda).fused  # only where PyTorch has the kernel
    with pytest.raises(ValueError, match="optim.fused=true: PyTorch has no fused optimiser kernel for cuda"):
        fastpath.resolve(_train_cfg(amp=None, compile=False, fused=True), cuda)


def test_the_optimizer_gets_the_resolved_kernel(synth_root, tmp_path):
    from helpers import tiny_config

    from densemtl.config import config_from_dict
    from densemtl.engine import builders

    for fused in (True, False):
        cfg = config_from_dict(tiny_config(synth_root, tmp_path, **{"optim.fused": fused}))
        net = builders.build_model(cfg, 5)
        fast = fastpath.resolve(cfg, torch.device("cpu"))
        opt = builders.build_optimizer(cfg, net, builders.build_weighting(cfg), fused=fast.fused)
        assert bool(opt.defaults.get("fused")) is fused


def _batch(h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, h, w, generator=g)
    labels = {"semseg": torch.randint(0, 5, (2, h, w), generator=g),
              "depth": torch.rand(2, 1, h, w, generator=g) * 9 + 0.5,
              "normals": torch.nn.functional.normalize(torch.randn(2, 3, h, w, generator=g), dim=1)}
    return x, labels


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def test_channels_last_forward_equals_eager_fp32():
    torch.manual_seed(0)
    net = create_model("densemtl", ("semseg", "depth", "normals"), num_classes=5, backbone="resnet18").eval()
    x, _ = _batch()
    with torch.no_grad():
        ref = net(x)
        fast = copy.deepcopy(net).to(memory_format=torch.channels_last)
        out = fast(x.contiguous(memory_format=torch.channels_last))
    for t in ref:
        for s in ref[t]:
            assert _relative(out[t][s], ref[t][s]) < 1e-5, (t, s)


def _train(steps, channels_last=False, checkpointing=False, batches=None, dropout=True):
    torch.manual_seed(0)
    tasks = ("semseg", "depth", "normals")
    net = create_model("densemtl", tasks, num_classes=5, backbone="resnet18").train()
    net.set_activation_checkpointing(checkpointing)
    for m in net.modules():  # (dropout masks are drawn in memory order, which channels-last changes)
        if isinstance(m, torch.nn.Dropout) and not dropout:
            m.p = 0.0
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    w = create_weighting("fixed", tasks)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for i in range(steps):
        x, labels = batches[i]
        torch.manual_seed(100 + i)  # the same dropout masks in both runs
        opt.zero_grad(set_to_none=True)
        out = net(fastpath.to_memory_format(x, channels_last))
        total, _ = w.backward(task_losses(out, labels))
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        losses.append(float(total))
    return net, losses


@pytest.mark.slow
def test_fast_training_steps_agree_with_eager_fp32():
    # SGD: the update is linear in the gradient (Adam's first steps are ~lr * sign(g) and turn
    # rounding differences of near-zero gradients into lr-sized steps); the fused Adam kernel
    # is checked on its own below
    batches = [_batch(seed=i) for i in range(3)]
    ref, ref_losses = _train(3, batches=batches, dropout=False)
    fast, fast_losses = _train(3, channels_last=True, batches=batches, dropout=False)
    assert fast_losses == pytest.approx(ref_losses, rel=1e-5)
    init, _ = _train(0, batches=batches)
    a, b, c = dict(ref.named_parameters()), dict(fast.named_parameters()), dict(init.named_parameters())
    # Batch-statistics BatchNorm on 2 images of 32x48 (2x3 positions at layer4) amplifies
    # fp32 summation-order differences (~1e-7) to ~1e-2 in some gradients: the updates agree
    # to a few percent of their norm, losses to 1e-5
    diff = sum(float((a[k] - b[k]).detach().square().sum()) for k in a) ** 0.5
    update = sum(float((a[k] - c[k]).detach().square().sum()) for k in a) ** 0.5
    assert diff < 0.1 * update
    assert sum(not torch.equal(a[k], c[k]) for k in a) > 0.9 * len(a)  # and training did move them
    for (k, x), y in zip(ref.named_buffers(), fast.buffers()):  # BatchNorm running statistics
        if x.is_floating_point():
            assert float((y - x).norm()) <= 0.02 * float(x.norm()) + 1e-6, k


def test_fused_adam_equals_pytorch_adam_on_the_same_gradients():
    g = torch.Generator().manual_seed(0)
    p0 = [torch.randn(64, 32, generator=g), torch.randn(7, generator=g)]
    grads = [[torch.randn(p.shape, generator=g) * 10.0 ** -k for p in p0] for k in range(5)]
    out = {}
    for kind, kw in (("loop", {"foreach": False}), ("fused", {"fused": True})):
        ps = [torch.nn.Parameter(p.clone()) for p in p0]
        opt = torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.98), weight_decay=1e-4, **kw)
        for gs in grads:
            for p, gr in zip(ps, gs):
                p.grad = gr.clone()
            opt.step()
        out[kind] = ps
    for a, b, p in zip(out["loop"], out["fused"], p0):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
        assert (a - p).abs().mean() > 1e-2  # it moved (5 steps of lr 1e-2)


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_gradients_and_statistics():
    batches = [_batch(seed=i) for i in range(2)]
    ref, ref_losses = _train(2, batches=batches)
    ck, ck_losses = _train(2, checkpointing=True, batches=batches)
    assert ck_losses == pytest.approx(ref_losses, rel=1e-5)
    for (k, a), b in zip(ref.named_parameters(), ck.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    # BatchNorm running statistics were updated once per step, not again by the recomputation
    for (k, a), b in zip(ref.named_buffers(), ck.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_activation_checkpointing_is_refused_by_models_without_it():
    net = create_model("mtl", ("semseg", "depth"), num_classes=5, backbone="resnet18")
    with pytest.raises(ValueError, match="train.activation_checkpointing is not supported by DeepLabMTL"):
        net.set_activation_checkpointing(True)
    net.set_activation_checkpointing(False)


def test_predict_compiles_only_when_it_pays(monkeypatch):
    monkeypatch.setattr(fastpath, "compiler_available", lambda device: True)
    n = fastpath.COMPILE_MIN_IMAGES
    assert not fastpath.resolve_inference(num_images=n - 1, device="cuda").compile
    fast = fastpath.resolve_inference(num_images=n, device="cuda")
    assert fast.compile and fast.channels_last
    assert not fastpath.resolve_inference(num_images=10 * n).compile  # CPU: never automatically
    assert not fastpath.resolve_inference(num_images=10 * n, one_size=False, device="cuda").compile  # pad mode: one graph per size
    assert not fastpath.resolve_inference(compile=False, num_images=10 * n, device="cuda").compile
    assert fastpath.resolve_inference(compile=True, num_images=1).compile
    monkeypatch.setattr(fastpath, "compiler_available", lambda device: False)
    assert not fastpath.resolve_inference(num_images=10 * n, device="cuda").compile
    with pytest.warns(UserWarning, match="no code generator here: predicting eagerly"):
        assert not fastpath.resolve_inference(compile=True).compile


@pytest.mark.skipif(not __import__("os").environ.get("DENSEMTL_TEST_COMPILE"),
                    reason="compiles with inductor (minutes on 2 cores): set DENSEMTL_TEST_COMPILE=1")
def test_compiled_inference_equals_eager_fp32(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.manual_seed(0)
    net = create_model("densemtl", ("semseg", "depth"), num_classes=5, backbone="resnet18").eval()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial BatchNorm statistics, so that folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    x, _ = _batch()
    with torch.no_grad():
        ref = net(x)
    forward = fastpath.prepare_inference(copy.deepcopy(net), fastpath.FastPath(channels_last=True, compile=True))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback to eager would warn
        out = forward(fastpath.to_memory_format(x, True))
    assert forward._state == "compiled"
    for t in ref:
        assert _relative(out[t][0], ref[t][0]) < 1e-5, t


@pytest.mark.slow
@pytest.mark.parametrize("channels_last, checkpointing", [(True, False), (False, True), (True, True)])
def test_fp32_fast_path_forward_equals_eager(channels_last, checkpointing):
    """What FastPath.prepare/inputs do to a model in fp32 does not change its outputs (1e-5
    relative), in eval mode and in a training forward (checkpointing acts only there)."""
    torch.manual_seed(0)
    net = create_model("densemtl", ("semseg", "depth", "normals"), num_classes=5, backbone="resnet18")
    for m in net.modules():  # dropout masks are drawn in memory order, which channels-last changes
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    fast = fastpath.FastPath(channels_last=channels_last, checkpointing=checkpointing)
    x, _ = _batch()
    for training in (False, True):
        ref_net = copy.deepcopy(net).train(training)
        fast_net = fast.prepare(copy.deepcopy(net).train(training))
        ref = ref_net(x)
        out = fast_net(fast.inputs(x))
        for t in ref:
            for s in ref[t]:
                assert _relative(out[t][s].detach(), ref[t][s].detach()) < 1e-5, (training, t, s)
    assert fast_net.activation_checkpointing is checkpointing
    assert fast.inputs(x).is_contiguous(memory_format=torch.channels_last) is channels_last


@pytest.mark.slow
def test_trainer_runs_the_resolved_fast_path(synth_root, tmp_path, monkeypatch):
    """The trainer resolves the speed keys once: the optimiser gets the fused kernel, the model
    and its inputs the memory format, the step the autocast; env.json records the choice."""
    import json

    from helpers import tiny_config

    from densemtl.config import config_from_dict
    from densemtl.engine import Trainer

    seen = []
    real = fastpath.FastPath.autocast

    def spy(self, device):
        seen.append(self.amp)
        return real(self, device)

    monkeypatch.setattr(fastpath.FastPath, "autocast", spy)
    cfg = tiny_config(synth_root, tmp_path, **{"train.amp": "auto", "train.channels_last": True, "optim.fused": True,
                                               "schedule.iterations": 1, "train.eval_every": 0})
    tr = Trainer(config_from_dict(cfg))
    expected = fastpath.resolve(config_from_dict(cfg), torch.device("cpu"))
    assert tr.fast == expected and tr.fast.channels_last and tr.fast.amp == ("bf16" if fastpath.native_bf16("cpu") else None)
    assert bool(tr.optimizer.defaults.get("fused")) is tr.fast.fused is True
    assert tr.model.encoder.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    tr.train()
    assert seen == [tr.fast.amp]
    assert json.loads((tr.run_dir / "env.json").read_text())["fast_path"] == tr.fast.as_dict()


# --- reflection padding (models/blocks.py): the decoders' pad, faster than PyTorch's CPU kernel ---
@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (1, 2, 5, 3), (2, 4, 7, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reflect_pad1_is_pytorchs_reflection_pad(shape, channels_last):
    """Values exactly those of F.pad(mode="reflect") in every dtype, the input's memory format
    kept, and the folded backward equal to the numerical gradient (float64 gradcheck)."""
    import torch.nn.functional as F

    from densemtl.models.blocks import reflect_pad1

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        x = torch.randn(*shape).to(dtype).contiguous(memory_format=fmt)
        y = reflect_pad1(x)
        assert torch.equal(y, F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if channels_last and shape[1] > 1:
            assert y.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    assert torch.autograd.gradcheck(reflect_pad1, (x,))
    # the backward is itself differentiable: GradNorm differentiates gradients through the decoders
    assert torch.autograd.gradgradcheck(reflect_pad1, (x,))
    # and against PyTorch's own backward on a non-uniform upstream gradient
    g = torch.randn(shape[0], shape[1], shape[2] + 2, shape[3] + 2, dtype=torch.float64)
    (mine,) = torch.autograd.grad(reflect_pad1(x), x, g)
    (ref,) = torch.autograd.grad(F.pad(x, (1, 1, 1, 1), mode="reflect"), x, g)
    torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)


def test_reflect_pad1_refuses_maps_it_cannot_reflect_and_traces_to_one_pad():
    from densemtl.models.blocks import ConvBlock, reflect_pad1

    with pytest.raises(ValueError, match=r"H, W >= 2, got \(1, 3, 1, 4\)"):
        reflect_pad1(torch.zeros(1, 3, 1, 4))
    block = ConvBlock(3, 4).eval()
    x = torch.randn(1, 3, 6, 8)
    traced = torch.jit.trace(block, x)  # what the ONNX exporter records: one reflection pad
    graph = str(traced.inlined_graph)
    assert "aten::pad" in graph and 'value="reflect"' in graph and "aten::copy_" not in graph
    torch.testing.assert_close(traced(x), block(x), rtol=0, atol=0)


def test_cross_task_attention_stays_in_the_autocast_precision():
    """Under bf16 autocast the alpha-weighted attention map stays bf16 (an fp32 alpha would
    promote the full-size map, and the concatenation after it, to fp32) while alpha keeps its
    fp32 parameter and gradient; in fp32 nothing changes."""
    from densemtl.models.xtam import CorrelationAttention

    torch.manual_seed(0)
    corr = CorrelationAttention(8, 2, mode="both")
    with torch.no_grad():
        for a in corr.alpha.values():
            a.fill_(0.5)
    target, source = torch.randn(2, 8, 8, 12), torch.randn(2, 8, 8, 12)
    with torch.autocast("cpu", torch.bfloat16):
        outs = corr(target, source)
    assert [o.dtype for o in outs] == [torch.bfloat16, torch.bfloat16]
    sum(o.float().sum() for o in outs).backward()
    for a in corr.alpha.values():
        assert a.dtype == a.grad.dtype == torch.float32 and a.grad.abs().sum() > 0
    assert all(o.dtype == torch.float32 for o in corr(target, source))
