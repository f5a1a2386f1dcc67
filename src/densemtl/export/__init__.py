"""Export of densemtl models to deployment formats (ONNX)."""

from .onnx import (
    DEFAULT_OPSET, EXPORTERS, ExportModule, explicit_attention, export_onnx, output_name, parse_size, verify_onnx,
)

__all__ = [
    "DEFAULT_OPSET", "EXPORTERS", "ExportModule", "explicit_attention", "export_onnx", "output_name", "parse_size",
    "verify_onnx",
]
