"""Run Python code in a fresh process in which this project's packages cannot be imported.

Hub users load our folders with `trust_remote_code=True` on machines without the package, so the Hub code path must
be tested without it. An installed package (editable or not) is found by Python's import system, so the child
process blocks our import names with a meta-path finder and asserts that they fail before running the test code.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path


PROJECT_PACKAGES = ("modeling_xgenmm", "xgenmm_processing")

_PRELUDE = f"""
import sys

class _BlockProjectPackages:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {PROJECT_PACKAGES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (this process simulates a machine without xgen-mm)")
        return None

sys.meta_path.insert(0, _BlockProjectPackages())
for _name in {PROJECT_PACKAGES!r}:
    try:
        __import__(_name)
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError(f"{{_name}} is importable in the isolated process")
"""


def run_isolated(code: str, cwd: Path, timeout: float = 600) -> dict:
    """Runs `code` (which must print one JSON object as its last stdout line) in an isolated interpreter.

    Returns the decoded JSON object; raises with the child's stderr when it fails.
    """
    script = Path(cwd) / "isolated_script.py"
    script.write_text(_PRELUDE + textwrap.dedent(code))
    result = subprocess.run(
        [sys.executable, "-I", str(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(Path(cwd) / "hf_home"),
            "TRANSFORMERS_VERBOSITY": "error",
            "PATH": "/usr/bin:/bin",
        },
    )
    if result.returncode != 0:
        raise AssertionError(f"isolated process failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
