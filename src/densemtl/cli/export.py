"""``densemtl export CHECKPOINT --onnx OUT.onnx``: the model as an ONNX graph (see docs/onnx.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .args import out_file


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX (image in [0, 1] -> evaluated predictions of every task)"
    )
    p.add_argument("checkpoint", help="densemtl checkpoint file or run directory")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", type=out_file, help="ONNX file to write")
    p.add_argument("--size", default=None, metavar="HxW",
                   help="input height x width, multiples of 16 (default: the checkpoint's training size)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size (without --dynamic; default 1)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17 for torchscript, 20 for dynamo)")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torch.onnx exporter (default torchscript; dynamo needs onnxscript)")
    p.add_argument("--verify", action="store_true",
                   help="run the file with onnxruntime and print the max abs difference to PyTorch per output")
    p.set_defaults(func=run)


def default_size(ckpt: dict) -> tuple[int, int] | None:
    """The training size recorded in a checkpoint, else its dataset's default size."""
    data = (ckpt.get("config") or {}).get("data") or {}
    if data.get("size"):
        return tuple(int(v) for v in data["size"])
    if data.get("dataset"):
        from ..data import get_dataset_class

        try:
            return tuple(get_dataset_class(data["dataset"]).default_size)
        except KeyError:
            return None
    return None


def run(args) -> int:
    from ..engine import load_checkpoint, model_from_checkpoint
    from ..export import export_onnx, parse_size, verify_onnx

    if args.size is not None:
        size = parse_size(args.size)  # fail on a bad size before reading the checkpoint
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt)
    model.eval()
    if args.size is None:
        size = default_size(ckpt)
        if size is None:
            raise ValueError(f"{ckpt['path']} records no training size: give --size HxW (e.g. 448x576)")
        size = parse_size(f"{size[0]}x{size[1]}", model.size_divisor)
    if args.onnx.endswith("/") or Path(args.onnx).is_dir():
        raise ValueError(f"--onnx must be a file path, got the folder {args.onnx}")
    if args.exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise ValueError("the dynamo exporter needs onnxscript: pip install 'densemtl[export]'")
    if args.verify and importlib.util.find_spec("onnxruntime") is None:
        raise ValueError("--verify needs onnxruntime: pip install onnxruntime")
    info = export_onnx(model, args.onnx, size, batch=args.batch, dynamic=args.dynamic, opset=args.opset,
                       exporter=args.exporter)
    mib = Path(info["path"]).stat().st_size / 2**20
    attn = "fused" if info["fused_attention"] else "explicit"
    print(f"wrote {info['path']} ({mib:.1f} MiB, {info['exporter']} exporter, opset {info['opset']}, {attn} attention)")
    for name, shape in {**info["inputs"], **info["outputs"]}.items():
        print(f"  {name}: {' x '.join(str(d) for d in shape)}")
    if args.verify:
        sizes = [size]
        if args.dynamic:
            sizes.append((size[0] + model.size_divisor, size[1] + 2 * model.size_divisor))
        for (h, w), diffs in zip(sizes, verify_onnx(model, info["path"], sizes, batch=args.batch)):
            print(f"  onnxruntime vs PyTorch at {h}x{w}, max abs diff: "
                  + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return 0
