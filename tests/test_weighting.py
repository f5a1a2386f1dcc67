"""Task weighting methods behave as their papers describe on toy problems."""

import pytest
import torch

from densemtl.losses import create_weighting, list_weightings


def test_registry_and_fixed_presets():
    assert list_weightings() == ["fixed", "uncertainty", "dwa", "gradnorm"]
    assert create_weighting("fixed", ["depth", "semseg"]).weights() == {"semseg": 50.0, "depth": 1.0}
    assert create_weighting("fixed", "SDN").weights() == {"semseg": 100.0, "depth": 1.0, "normals": 100.0}
    assert create_weighting("fixed", "SDNE").weights()["edges"] == 50.0
    assert create_weighting("fixed", ["normals"]).weights() == {"normals": 1.0}
    with pytest.raises(ValueError, match="no preset task weights for task set SN"):
        create_weighting("fixed", "SN")
    w = create_weighting("fixed", "SN", weights={"semseg": 2, "normals": 3})
    total = w.total({"semseg": torch.tensor(1.0), "normals": torch.tensor(2.0)})
    assert total.item() == 8.0
    with pytest.raises(KeyError, match="unknown weighting"):
        create_weighting("pcgrad", "SD")


def test_uncertainty_downweights_the_noisier_task():
    method = create_weighting("uncertainty", "SD")
    assert len(list(method.parameters())) == 1
    opt = torch.optim.Adam(method.parameters(), lr=0.05)
    losses = {"semseg": torch.tensor(4.0), "depth": torch.tensor(0.25)}  # semseg = noisier / larger loss
    for _ in range(300):
        opt.zero_grad()
        method.backward(losses)
        opt.step()
    w = method.weights()
    # optimum of exp(-s) L + s is exp(-s) = 1 / L
    assert w["semseg"] == pytest.approx(0.25, rel=0.05)
    assert w["depth"] == pytest.approx(4.0, rel=0.05)


def test_dwa_upweights_the_task_that_stalls():
    method = create_weighting("dwa", "SD")
    epochs = [(1.0, 1.0), (0.5, 0.99), (0.25, 0.98)]
    seen = []
    for a, b in epochs:
        for _ in range(3):
            method.backward({"semseg": torch.tensor(a, requires_grad=True), "depth": torch.tensor(b, requires_grad=True)})
        seen.append(method.weights())
        method.epoch_end()
    assert seen[0] == {"semseg": 1.0, "depth": 1.0} and seen[1] == {"semseg": 1.0, "depth": 1.0}
    w = method.weights()
    assert w["depth"] > 1.0 > w["semseg"]
    assert w["depth"] + w["semseg"] == pytest.approx(2.0)
    r = torch.tensor([0.25 / 0.5, 0.98 / 0.99])
    assert w["semseg"] == pytest.approx(float(2 * torch.softmax(r / 2, 0)[0]), rel=1e-6)


def test_gradnorm_balances_gradient_magnitudes():
    torch.manual_seed(0)
    shared = torch.nn.Linear(8, 8)
    head_a, head_b = torch.nn.Linear(8, 1), torch.nn.Linear(8, 1)
    method = create_weighting("gradnorm", "SD")
    opt_w = torch.optim.Adam(method.parameters(), lr=0.02)
    x = torch.randn(64, 8)
    ya, yb = torch.randn(64, 1), torch.randn(64, 1)
    with pytest.raises(ValueError, match="shared_parameters"):
        method.backward({"semseg": torch.tensor(1.0), "depth": torch.tensor(1.0)})
    for _ in range(100):
        opt_w.zero_grad()
        shared.zero_grad()
        h = torch.relu(shared(x))
        losses = {
            "semseg": ((head_a(h) - ya) ** 2).mean(),
            "depth": 100 * ((head_b(h) - yb) ** 2).mean(),  # 100x larger gradients
        }
        total, info = method.backward(losses, shared_parameters=shared.parameters())
        assert shared.weight.grad is not None and "gradnorm_loss" in info
        opt_w.step()
        method.step_end()
    w = method.weights()
    assert w["depth"] < 0.2 and w["semseg"] > 1.8
    assert w["depth"] + w["semseg"] == pytest.approx(2.0, rel=1e-5)
