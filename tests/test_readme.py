"""The README's Python snippets run as written: each marked `<!-- snippet: NAME -->` right above its code block runs in
a fresh process, in a folder that holds what the snippet names (a model folder where the README says one is)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

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


def test_the_using_a_model_snippet_runs_as_written(tmp_path):
    folder = tmp_path / "runs" / "toy-world" / "model"
    save_model_folder(folder)
    completed = run_snippet(readme_snippet("using a model"), tmp_path)

    # It prints the model's greedy answer to its question about a red circle.
    model, processor = tiny_instruct_model(), tiny_processor()
    image = Image.new("RGB", (64, 64), (235, 235, 235))
    ImageDraw.Draw(image).ellipse([4, 4, 28, 28], fill="red")
    question = {"type": "text", "text": "What color are the shapes?"}
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, question]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    output = model.generate(**inputs, max_new_tokens=32)
    answer = processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])[0]
    assert completed.stdout == answer + "\n"


def test_the_pipeline_snippet_runs_as_written(tmp_path):
    save_model_folder(tmp_path / "runs" / "toy-world" / "model")
    completed = run_snippet(readme_snippet("pipeline"), tmp_path)
    assert completed.stdout.strip()


@pytest.mark.slow
def test_the_quantized_and_compiled_snippet_runs_as_written_and_answers_as_eager_int8_decoding(tmp_path):
    save_model_folder(tmp_path / "runs" / "toy-world" / "model")
    code = readme_snippet("quantized and compiled")
    compiled = run_snippet(code, tmp_path)
    assert 'cache_implementation="static"' in code
    eager = run_snippet(code.replace('cache_implementation="static"', "disable_compile=True"), tmp_path)
    assert compiled.stdout.strip() and compiled.stdout == eager.stdout
