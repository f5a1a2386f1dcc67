"""The four tasks of the paper, registered in canonical order."""

from .registry import Task, register_task

SEMSEG = register_task(Task("semseg", "S", None, True, "mIoU", "semantic segmentation (class logits)"))
DEPTH = register_task(Task("depth", "D", 1, False, "rmse", "depth (inverse-depth code regression)"))
NORMALS = register_task(Task("normals", "N", 3, False, "mean_angle", "surface normals (unnormalised xyz)"))
EDGES = register_task(Task("edges", "E", 1, True, "f1", "edges (one logit per pixel)"))
