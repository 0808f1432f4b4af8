"""The README's Python snippets run as written: each marked `<!-- snippet: NAME -->` right above its code block runs in
a fresh process, in a folder that holds what the snippet names (a model folder where the README says one is)."""

import os
import re
import subprocess
import sys
from pathlib import Path

from hub_helpers import tiny_instruct_model, tiny_processor
from paths import REPO_ROOT


def readme_snippet(name: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no Python block marked <!-- snippet: {name} -->"
    return match.group(1)


def run_snippet(code: str, cwd: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def save_model_folder(folder: Path) -> None:
    tiny_instruct_model().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)


def test_the_multi_turn_chat_snippet_runs_as_written(tmp_path):
    save_model_folder(tmp_path / "runs" / "toy-world" / "model")
    completed = run_snippet(readme_snippet("multi-turn chat"), tmp_path)
    assert completed.stdout  # the second turn's answer, printed
