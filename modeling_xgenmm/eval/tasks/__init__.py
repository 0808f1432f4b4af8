# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""lmms-eval task definitions shipped with the package; `python -m modeling_xgenmm.eval.tasks` prints the folder to
pass as lmms-eval's `--include_path`."""

from pathlib import Path


TASKS_DIR = Path(__file__).resolve().parent


def interleaved(rows, count: int) -> list:
    """The toy world's held-out rows (`count` single-image, then `count` two-image) alternating, as the
    `xgenmm_toy_world` task orders them, so that lmms-eval's `--limit` takes both kinds. (Here, not in the task's
    module: that one imports lmms-eval's task API, which sets PIL's `LOAD_TRUNCATED_IMAGES` for the whole process.)"""
    return [rows[index + offset] for index in range(count) for offset in (0, count)]


__all__ = ["TASKS_DIR", "interleaved"]
