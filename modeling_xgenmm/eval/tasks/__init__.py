# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""lmms-eval task definitions shipped with the package; `python -m modeling_xgenmm.eval.tasks` prints the folder to
pass as lmms-eval's `--include_path`."""

from pathlib import Path


TASKS_DIR = Path(__file__).resolve().parent

__all__ = ["TASKS_DIR"]
