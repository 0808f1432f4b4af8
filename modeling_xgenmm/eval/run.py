# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""`xgenmm eval`: runs lmms-eval's own command line (a fresh process) on a model folder for a list of tasks, with the
package's tasks on its include path, then writes the results into the folder's model card (`model-index`), so that
`xgenmm publish` publishes them. lmms-eval's JSON stays in `--output-path`."""

import json
import subprocess
import sys
from pathlib import Path

from ..hub.card_results import lmms_eval_results, write_card_results
from .tasks import TASKS_DIR


def lmms_eval_command(
    model: str,
    tasks: str,
    output_path: str,
    batch_size: int = 1,
    model_args: str = "",
    limit: int | None = None,
    num_shots: int = 0,
    force_simple: bool = False,
    log_samples: bool = False,
) -> list[str]:
    """The lmms-eval command line of one evaluation (`python -m lmms_eval`, the interpreter running this)."""
    arguments = f"pretrained={model}" + (f",num_shots={num_shots}" if num_shots else "")
    arguments += f",{model_args}" if model_args else ""
    command = [sys.executable, "-m", "lmms_eval", "--model", "xgenmm", "--model_args", arguments]
    command += ["--tasks", tasks, "--include_path", str(TASKS_DIR), "--batch_size", str(batch_size)]
    command += ["--output_path", output_path]
    command += ["--limit", str(limit)] if limit is not None else []
    command += ["--force_simple"] if force_simple else []
    command += ["--log_samples"] if log_samples else []
    return command


def latest_results_file(output_path: str | Path) -> Path:
    """The newest `*_results.json` lmms-eval wrote under `output_path`."""
    files = sorted(Path(output_path).rglob("*_results.json"), key=lambda path: path.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"lmms-eval wrote no *_results.json under {output_path}")
    return files[-1]


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_eval(model: str, tasks: str, output_path: str, write_card: bool = True, **options) -> Path:
    """Runs lmms-eval and returns the results file it wrote; with `write_card`, a local model folder's README.md gets
    the results too."""
    output = Path(output_path)
    output.mkdir(parents=True, exist_ok=True)
    started = set(output.rglob("*_results.json"))
    completed = subprocess.run(lmms_eval_command(model, tasks, str(output), **options), check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"lmms-eval failed (exit code {completed.returncode}); its output is above")
    path = latest_results_file(output)
    if path in started:
        raise RuntimeError(f"lmms-eval wrote no new results under {output} (is every task name right?)")
    if write_card and Path(model).is_dir():
        results = lmms_eval_results(read_results(path), num_shots=options.get("num_shots") or None)
        write_card_results(model, results)
    return path


__all__ = ["latest_results_file", "lmms_eval_command", "read_results", "run_eval"]
