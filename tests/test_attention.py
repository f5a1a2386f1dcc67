"""Fused xTAM attention equals the explicit formula; alpha starts at zero."""

import pytest
import torch

from densemtl.models import DirectionalXTAM, attention, attention_reference
from densemtl.models.xtam import CorrelationAttention


@pytest.mark.parametrize("nq,nk,d", [(37, 29, 16), (64, 64, 32), (5, 131, 8), (130, 7, 24)])
def test_fused_matches_explicit_forward_and_grad(nq, nk, d):
    g = torch.Generator().manual_seed(nq * nk)
    q, k, v = (torch.randn(2, 1, n, d, generator=g, dtype=torch.float32) for n in (nq, nk, nk))
    ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out_f = attention(*ins, fused=True)
    out_r = attention_reference(*ref)
    assert out_f.shape == (2, 1, nq, d)
    torch.testing.assert_close(out_f, out_r, atol=1e-5, rtol=0)
    w = torch.randn_like(out_r)
    (out_f * w).sum().backward()
    (out_r * w).sum().backward()
    for a, b in zip(ins, ref):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["spatial", "channel", "both"])
@pytest.mark.parametrize("kv", ["s", "s2"])
@pytest.mark.parametrize("hw", [(12, 20), (9, 14)])  # 3x5 / 3x4 tokens after s=4 -> not multiples of 8
def test_correlation_attention_fused_equals_explicit(mode, kv, hw):
    torch.manual_seed(0)
    C = 16
    mod = CorrelationAttention(C, 4 if kv == "s" else 2, kv, mode).train()
    with torch.no_grad():
        for a in mod.alpha.values():
            a.normal_()
    target = torch.randn(2, C, *hw)
    source = torch.randn(2, C, *hw)
    results = []
    for fused in (True, False):
        mod.fused = fused
        t, s = target.clone().requires_grad_(True), source.clone().requires_grad_(True)
        mod.zero_grad()
        outs = mod(t, s)
        assert len(outs) == (2 if mode == "both" else 1)
        assert all(o.shape == (2, C, *hw) for o in outs)
        sum((o * torch.cos(torch.arange(o.numel()).view_as(o).float())).sum() for o in outs).backward()
        grads = [t.grad, s.grad] + [p.grad.clone() for p in mod.parameters()]
        results.append((outs, grads))
    (of, gf), (orf, gr) = results
    for a, b in zip(of, orf):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_alpha_starts_at_zero_and_learns():
    torch.manual_seed(0)
    C = 16
    x = DirectionalXTAM(C, s=2).train()
    assert torch.equal(x.corr.alpha["spatial"], torch.zeros(1, C, 1, 1))
    target, source = torch.randn(2, C, 8, 8), torch.randn(2, C, 8, 8)
    out = x(target, source)
    # the target only feeds the correlation branch: at init, changing it changes nothing
    out2 = x(torch.randn(2, C, 8, 8) * 5, source)
    assert torch.equal(out, out2)
    # and zeroing the correlation branch's output changes nothing either
    orig = x.corr.forward
    x.corr.forward = lambda t, s: [torch.zeros_like(o) for o in orig(t, s)]
    assert torch.equal(out, x(target, source))
    x.corr.forward = orig
    out.pow(2).mean().backward()
    g = x.corr.alpha["spatial"].grad
    assert g is not None and g.abs().sum() > 0
    # query/key projections get no gradient while alpha is zero (the branch is cut)
    assert x.corr.query[0].weight.grad is None or x.corr.query[0].weight.grad.abs().sum() == 0


def test_xtam_ablation_switches_change_structure():
    C = 16
    assert DirectionalXTAM(C, 2, self_attention=False).self_attn is None
    assert DirectionalXTAM(C, 2, correlation_attention=False).corr is None
    assert DirectionalXTAM(C, 2, alpha=False).corr.alpha is None
    assert DirectionalXTAM(C, 2, attention="both").proj[0].in_channels == C // 2 + 2 * C
    with pytest.raises(ValueError, match="self_attention or correlation_attention"):
        DirectionalXTAM(C, 2, self_attention=False, correlation_attention=False)
    with pytest.raises(ValueError, match="attention must be one of"):
        DirectionalXTAM(C, 2, attention="temporal")
    for kw in [dict(self_attention=False), dict(correlation_attention=False), dict(alpha=False), dict(attention="channel")]:
        out = DirectionalXTAM(C, 2, **kw)(torch.randn(2, C, 8, 12), torch.randn(2, C, 8, 12))
        assert out.shape == (2, C, 8, 12)
