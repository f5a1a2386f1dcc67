"""mTEB parameter counts must equal the paper's Table 3 exactly."""

import pytest
import torch

from densemtl.models import count_parameters, create_model
from densemtl.models.decoder import DECODER_WIDTHS

TABLE3 = {
    ("SD", (1,)): 773_120,
    ("SD", (2,)): 773_120,
    ("SD", (3,)): 3_086_336,
    ("SD", (4,)): 3_086_336,
    ("SD", (1, 2, 3, 4)): 7_718_912,
    ("SDN", (1,)): 2_318_592,
    ("SDN", (2,)): 2_318_592,
    ("SDN", (3,)): 9_257_472,
    ("SDN", (4,)): 9_257_472,
    ("SDN", (1, 2, 3, 4)): 23_152_128,
}


def _params(tasks, scales):
    with torch.device("meta"):
        return count_parameters(create_model("densemtl", tasks, num_classes=40, backbone="resnet101", mteb_scales=scales))


@pytest.mark.slow
@pytest.mark.parametrize("tasks", ["SD", "SDN"])
def test_mteb_added_parameters_match_table3(tasks):
    base = _params(tasks, [])
    for (t, scales), expected in TABLE3.items():
        if t == tasks:
            assert _params(tasks, scales) - base == expected, (tasks, scales)


def _closed_form(n_tasks, channels):
    # independent count from the layer list of xTAM and mTEB
    C = channels
    pair = (9 * C * C + C) + 2 * (9 * C * (C // 2)) + 3 * (C * C + 2 * C) + C + ((C // 2 + C) * C + 2 * C)
    target = (n_tasks - 1) * C * C + 2 * C
    return n_tasks * (n_tasks - 1) * pair + n_tasks * target


@pytest.mark.slow
@pytest.mark.parametrize("tasks,n", [("SD", 2), ("SDN", 3), ("SDNE", 4)])
def test_mteb_closed_form(tasks, n):
    with torch.device("meta"):
        m = create_model("densemtl", tasks, num_classes=16, backbone="resnet101", mteb_scales=[1, 2, 3, 4])
    for s, block in m.exchanges.items():
        assert count_parameters(block) == _closed_form(n, DECODER_WIDTHS[int(s)])
