"""densemtl: dense multi-task learning with cross-task attention (DenseMTL, WACV 2023)."""

__version__ = "0.1.0"
