"""ONNX export: one graph from an RGB image to the evaluated predictions of every task.

The exported graph has one input and one output per task, in canonical task order:

* ``image``: ``(N, 3, H, W)`` float32 RGB in [0, 1], H and W multiples of 16 (the input
  normalisation is inside the graph).
* ``semseg_logits``: ``(N, K, H, W)`` class scores (``argmax`` over axis 1 = class id).
* ``depth``: ``(N, 1, H, W)`` metric depth in metres.
* ``normals``: ``(N, 3, H, W)`` unit surface normals.
* ``edges``: ``(N, 1, H, W)`` edge probability in [0, 1].
* ``disparity_depth``: ``(N, 1, H, W)`` self-supervised depth in metres (0.1 to 100, up to scale).

All outputs are at the input resolution (the model's evaluation scale 0), decoded by each
task's :meth:`~densemtl.tasks.Task.decode` except segmentation, which keeps its logits.

Two exporters are supported. ``torchscript`` (``torch.onnx.export(..., dynamo=False)``,
the default) exports every registered model, needs nothing but torch, writes one
self-contained file and is several times faster than ``dynamo`` for dynamic shapes; the
shape-dependent branches it traces (input checks, ``max(h // s, 1)``, "skip the resize when
sizes match") take the same value at every valid size. ``dynamo``
(``torch.export``-based, needs ``onnxscript``) gives the same graphs and numbers and is the
path torch keeps developing.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..tasks import get_task

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 20}
OPSET_RANGE = {"torchscript": (11, 20), "dynamo": (18, 23)}
# the TorchScript exporter translates F.scaled_dot_product_attention from this opset on
FUSED_ATTENTION_MIN_OPSET = 14
INPUT_NAME = "image"
DYNAMIC_DIMS = {0: "batch", 2: "height", 3: "width"}


def output_name(task: str) -> str:
    """ONNX output name of a task (``semseg`` -> ``semseg_logits``, ``depth`` -> ``depth``):
    the task's :attr:`~densemtl.tasks.Task.export_name`."""
    return get_task(task).output_name


def parse_size(text: str, divisor: int = 16) -> tuple[int, int]:
    """``"448x576"`` -> ``(448, 576)`` (height, width), both positive multiples of ``divisor``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"size must be HxW with two positive integers, e.g. 448x576; got '{text}'")
    h, w = int(m.group(1)), int(m.group(2))
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {h}x{w}")
    if h % divisor or w % divisor:
        nh, nw = max(divisor, round(h / divisor) * divisor), max(divisor, round(w / divisor) * divisor)
        raise ValueError(f"size {h}x{w} (HxW) is not a multiple of {divisor}; the nearest valid size is {nh}x{nw}")
    return h, w


@contextlib.contextmanager
def explicit_attention(model: nn.Module):
    """Within the block, every xTAM correlation attention uses the explicit
    ``softmax(q k^T / sqrt(d)) v`` instead of the fused SDPA kernel; restored afterwards."""
    from ..models.xtam import CorrelationAttention

    mods = [m for m in model.modules() if isinstance(m, CorrelationAttention)]
    saved = [m.fused for m in mods]
    try:
        for m in mods:
            m.fused = False
        yield model
    finally:
        for m, f in zip(mods, saved):
            m.fused = f


class ExportModule(nn.Module):
    """``forward(image (N, 3, H, W) in [0, 1])`` -> tuple of evaluated predictions, one per
    task in ``tasks`` order, each ``(N, C_task, H, W)`` float32 (see the module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not all(hasattr(model, a) for a in ("tasks", "eval_scale", "channels")):
            raise TypeError(f"expected a densemtl MultiTaskModel, got {type(model).__name__}")
        self.model = model
        self.tasks = tuple(model.tasks)
        self.output_names = tuple(output_name(t) for t in self.tasks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        s = self.model.eval_scale
        return tuple(get_task(t).export_output(out[t][s]) for t in self.tasks)

    def output_shapes(self, size: tuple[int, int] | None, batch: int | None) -> dict[str, list]:
        """``{output name: [N, C, H, W]}``; ``None`` size/batch -> the dynamic dimension names."""
        h, w = size if size is not None else (DYNAMIC_DIMS[2], DYNAMIC_DIMS[3])
        n = batch if batch is not None else DYNAMIC_DIMS[0]
        return {name: [n, self.model.channels[t], h, w] for t, name in zip(self.tasks, self.output_names)}


def _check_opset(exporter: str, opset: int | None) -> int:
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got '{exporter}'")
    opset = DEFAULT_OPSET[exporter] if opset is None else int(opset)
    lo, hi = OPSET_RANGE[exporter]
    if not lo <= opset <= hi:
        raise ValueError(f"the {exporter} exporter supports opsets {lo} to {hi}, got {opset}")
    return opset


@contextlib.contextmanager
def _quiet_export():
    # reviewed: trace-time shape checks are constant for every valid size (see module docstring)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        yield


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    size: tuple[int, int],
    *,
    batch: int = 1,
    dynamic: bool = False,
    opset: int | None = None,
    exporter: str = "torchscript",
    fused_attention: bool | None = None,
    check: bool = True,
) -> dict:
    """Write ``model`` (a densemtl ``MultiTaskModel``) as an ONNX file at ``path``.

    Args:
        size: ``(H, W)`` of the example input, multiples of ``model.size_divisor``; the
            graph's fixed size unless ``dynamic``.
        batch: fixed batch size (ignored when ``dynamic``).
        dynamic: batch, height and width become dynamic dimensions named ``batch``,
            ``height`` and ``width`` (any multiple of 16 at run time).
        opset: ONNX opset (default 17 for ``torchscript``, 20 for ``dynamo``).
        exporter: ``"torchscript"`` or ``"dynamo"``.
        fused_attention: ``None`` keeps the fused SDPA unless the exporter cannot translate it
            (TorchScript exporter below opset 14), then uses the explicit formula during the
            export only; ``False`` forces the explicit formula.
        check: run ``onnx.checker`` on the file when the ``onnx`` package is installed.

    Returns:
        ``{"path", "exporter", "opset", "fused_attention", "dynamic", "inputs", "outputs"}``
        with the input and output shapes (names for the dynamic dimensions).
    """
    opset = _check_opset(exporter, opset)
    wrapper = ExportModule(model).eval()
    div = getattr(model, "size_divisor", 16)
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0 or h % div or w % div:
        parse_size(f"{h}x{w}", div)  # raises with the nearest valid size
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    can_fuse = exporter != "torchscript" or opset >= FUSED_ATTENTION_MIN_OPSET
    if fused_attention and not can_fuse:
        raise ValueError(f"the torchscript exporter translates fused attention from opset {FUSED_ATTENTION_MIN_OPSET} on, got {opset}")
    fused = can_fuse if fused_attention is None else bool(fused_attention)

    from ..engine.checkpoint import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        # a batch of 2 keeps the batch dimension from being specialised to 1 in dynamic mode
        example = torch.rand(2 if dynamic else batch, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
        names = list(wrapper.output_names)
        was_training = model.training
        model.eval()
        try:
            attn = contextlib.nullcontext() if fused else explicit_attention(model)
            with torch.no_grad(), attn, _quiet_export():
                if exporter == "torchscript":
                    axes = {n: DYNAMIC_DIMS for n in [INPUT_NAME, *names]} if dynamic else None
                    torch.onnx.export(
                        wrapper, (example,), str(tmp), dynamo=False, input_names=[INPUT_NAME], output_names=names,
                        dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                    )
                else:
                    shapes = {INPUT_NAME: dict(DYNAMIC_DIMS)} if dynamic else None
                    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                        prog = torch.onnx.export(
                            wrapper, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=names,
                            dynamic_shapes=shapes, opset_version=opset, external_data=False, verbose=False,
                        )
                    prog.save(str(tmp), external_data=False)
                    if dynamic:
                        _name_output_dims(tmp)
        finally:
            model.train(was_training)
        if check:
            try:
                import onnx
            except ImportError:
                pass
            else:
                onnx.checker.check_model(str(tmp))
    return {
        "path": str(path),
        "exporter": exporter,
        "opset": opset,
        "fused_attention": fused,
        "dynamic": bool(dynamic),
        "inputs": {INPUT_NAME: [DYNAMIC_DIMS[0], 3, DYNAMIC_DIMS[2], DYNAMIC_DIMS[3]] if dynamic else [batch, 3, h, w]},
        "outputs": wrapper.output_shapes(None if dynamic else (h, w), None if dynamic else batch),
    }


def _name_output_dims(path: Path) -> None:
    """The dynamo exporter names output sizes by formulas (``16*((height - 1)//16) + 16``);
    they equal the input's for every valid size, so give them the input's names."""
    import onnx

    m = onnx.load(str(path))
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        for i, name in DYNAMIC_DIMS.items():
            if len(dims) == 4 and dims[i].dim_param:
                dims[i].dim_param = name
    onnx.save(m, str(path))


def verify_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    sizes: list[tuple[int, int]],
    batch: int = 1,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Run the ONNX file with onnxruntime (CPU) and the model in PyTorch (eval mode, fp32)
    on the same random images; returns, per size, ``{output name: max |onnx - torch|}``."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("verifying an export needs onnxruntime: pip install onnxruntime") from e
    wrapper = ExportModule(model).eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    results = []
    try:
        for h, w in sizes:
            x = torch.rand(batch, 3, h, w, generator=g)
            with torch.no_grad():
                ref = wrapper(x.to(next(model.parameters()).device))
            got = sess.run(list(wrapper.output_names), {INPUT_NAME: x.numpy()})
            results.append({
                n: float((torch.from_numpy(o) - r.float().cpu()).abs().max())
                for n, o, r in zip(wrapper.output_names, got, ref)
            })
    finally:
        model.train(was_training)
    return results
