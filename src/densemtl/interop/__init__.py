"""Interoperability: converters between densemtl checkpoints and other formats."""

from .official import (
    ConversionError, OfficialLayout, convert_official_file, detect_order, export_official, from_official,
    infer_layout, load_detection_batches, parse_source_order, read_official,
)

__all__ = [
    "ConversionError", "OfficialLayout", "convert_official_file", "detect_order", "export_official", "from_official",
    "infer_layout", "load_detection_batches", "parse_source_order", "read_official",
]
