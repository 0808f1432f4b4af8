# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""`xgenmm eval`: runs lmms-eval's own command line (a fresh process) on a model folder for a list of tasks, with the
package's tasks on its include path, then writes the results into the folder's model card (`model-index`), so that
`xgenmm publish` publishes them. lmms-eval's JSON stays in `--output-path`."""

import json
import re
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from ..hub.card_results import add_card_results, lmms_eval_results
from ..hub.model_card import folder_card
from .tasks import TASKS_DIR


# Model arguments that `xgenmm eval` sets itself: given again in `--model-args`, lmms-eval would take the later one
# (another model's scores would land in this model's card).
OWN_MODEL_ARGS = {"pretrained": "the MODEL argument", "num_shots": "--num-shots"}
# The last line of a Python traceback, which names the exception and its message.
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\b.*")


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
    """The lmms-eval command line of one evaluation (`python -m lmms_eval`, the interpreter running this). Raises
    when `model_args` sets what the other arguments set (`OWN_MODEL_ARGS`)."""
    given = {part.split("=", 1)[0].strip(): part for part in model_args.split(",") if part.strip()}
    clashing = sorted(given.keys() & OWN_MODEL_ARGS.keys())
    if clashing:
        name = clashing[0]
        raise ValueError(
            f"--model-args sets {given[name]!r}, which {OWN_MODEL_ARGS[name]} sets: give it there only (the results "
            f"are written into the card of the MODEL folder, {model})"
        )
    arguments = f"pretrained={model}" + (f",num_shots={num_shots}" if num_shots else "")
    arguments += f",{model_args}" if model_args else ""
    command = [sys.executable, "-m", "lmms_eval", "--model", "xgenmm", "--model_args", arguments]
    command += ["--tasks", tasks, "--include_path", str(TASKS_DIR), "--batch_size", str(batch_size)]
    command += ["--output_path", output_path]
    command += ["--limit", str(limit)] if limit is not None else []
    command += ["--force_simple"] if force_simple else []
    command += ["--log_samples"] if log_samples else []
    return command


def latest_results_file(output_path: str | Path) -> Path | None:
    """The newest `*_results.json` lmms-eval wrote under `output_path`, or None."""
    files = sorted(Path(output_path).rglob("*_results.json"), key=lambda path: path.stat().st_mtime)
    return files[-1] if files else None


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def failure_cause(output: Iterable[str]) -> str | None:
    """What made lmms-eval fail, from its output: the last exception line of a traceback (lmms-eval prints the
    traceback of an error and still exits 0), else its last ERROR line; None when it printed neither."""
    lines = [line.rstrip() for line in output]
    for line in reversed(lines):
        if EXCEPTION_LINE.match(line):
            return line
    errors = [line for line in lines if "| ERROR" in line]
    return errors[-1].split(" - ", 1)[-1] if errors else None


def run_lmms_eval(command: list[str]) -> tuple[int, list[str]]:
    """Runs lmms-eval, its standard error passed through as it comes, and returns its exit code and the last lines
    of that output (where its errors are)."""
    tail = deque(maxlen=400)
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace") as process:
        for line in process.stderr:
            sys.stderr.write(line)
            tail.append(line)
    return process.returncode, list(tail)


def run_eval(model: str, tasks: str, output_path: str, write_card: bool = True, **options) -> Path:
    """Runs lmms-eval and returns the results file it wrote; with `write_card`, a local model folder's README.md gets
    the results too (`hub.model_card.folder_card`: the folder's card, or the package's card for its config).

    Raises `RuntimeError` with lmms-eval's own error when it fails or writes no results."""
    command = lmms_eval_command(model, tasks, output_path, **options)
    output = Path(output_path)
    output.mkdir(parents=True, exist_ok=True)
    earlier = latest_results_file(output)
    returncode, lines = run_lmms_eval(command)
    path = latest_results_file(output)
    if returncode != 0 or path is None or path == earlier:
        cause = failure_cause(lines) or f"exit code {returncode}, no error message"
        written = "" if returncode == 0 else f" (exit code {returncode})"
        raise RuntimeError(f"lmms-eval failed{written}, writing no results under {output}: {cause}")
    if write_card and Path(model).is_dir():
        results = lmms_eval_results(read_results(path), num_shots=options.get("num_shots") or None)
        card = add_card_results(folder_card(model), results, model_name=Path(model).resolve().name)
        card.save(Path(model) / "README.md")
    return path


__all__ = ["failure_cause", "latest_results_file", "lmms_eval_command", "read_results", "run_eval"]
