"""Helpers for the training tests: small rows of every format, image files, a recorder of logged losses, a digest of
a model's weights, and running the example scripts."""

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from modeling_xgenmm.train.arguments import XGenMMTrainingArguments
from paths import REPO_ROOT
from processing_helpers import synthetic_image


# (width, height) -> tiny-random grid: 60x30 is 1x2 crops and 40x100 is 2x1 (3 views, 24 tokens each); 56x56 is 2x1
# too; 50x160 is 3x1 (4 views, 32 tokens).
IMAGE_SIZES_WH = [(60, 30), (40, 100), (56, 56), (50, 160)]
COLORS = ["red", "green", "blue", "yellow"]

# The tiny Phi-3 (2 layers) has these linear layers; LoRA must adapt exactly them.
LANGUAGE_MODEL_LINEAR_LAYERS = {
    f"model.language_model.layers.{layer}.{name}"
    for layer in range(2)
    for name in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
}


def run_example(name: str, argv: list[str]):
    """Runs `examples/<name>.py`'s `main(argv)` in this process and returns what it returns (the trainer)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def tiny_run_settings(output_dir) -> dict:
    """Tiny runs: 2 steps of 4 rows at learning rate 1e-3, the loss logged every step, no checkpoints."""
    return {
        "output_dir": str(output_dir),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
    }


def tiny_args(output_dir, **overrides) -> XGenMMTrainingArguments:
    return XGenMMTrainingArguments(**{**tiny_run_settings(output_dir), **overrides})


def write_images(folder: Path) -> list[str]:
    """PNG files of `IMAGE_SIZES_WH` in `folder/img/`; returns their paths relative to `folder`."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (width, height) in enumerate(IMAGE_SIZES_WH):
        synthetic_image("RGB", width, height, seed=index).save(folder / "img" / f"{index}.png")
        paths.append(f"img/{index}.png")
    return paths


def sft_rows(images: list, count: int = 16) -> list[dict]:
    """Single-image conversations in both forms (messages and LLaVA), one answer per image colour."""
    rows = []
    for index in range(count):
        k = index % len(images)
        if index % 2:
            rows.append(
                {
                    "id": f"sft-{index}",
                    "messages": [
                        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]},
                        {"role": "assistant", "content": f"It is {COLORS[k]}."},
                    ],
                    "images": [images[k]],
                }
            )
        else:
            rows.append(
                {
                    "id": f"sft-{index}",
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat color?"},
                        {"from": "gpt", "value": f"It is {COLORS[k]}."},
                    ],
                    "image": images[k],
                }
            )
    return rows


def multi_image_rows(images: list, count: int = 8) -> list[dict]:
    """Two-turn conversations with two images in the first turn and one in the second."""
    rows = []
    for index in range(count):
        a, b, c = [(index + offset) % len(images) for offset in (0, 1, 2)]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": "<image><image>Which is warmer?"},
                    {"role": "assistant", "content": f"The {COLORS[a]} one."},
                    {"role": "user", "content": [{"type": "text", "text": "And this? "}, {"type": "image"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": f"It is {COLORS[c]}."}]},
                ],
                "images": [images[a], images[b], images[c]],
            }
        )
    return rows


def pretraining_rows(images: list, count: int = 8) -> list[dict]:
    """Interleaved two-image documents and caption pairs, alternating."""
    rows = []
    for index in range(count):
        a, b = index % len(images), (index + 1) % len(images)
        if index % 2:
            rows.append({"image": images[a], "caption": f"A {COLORS[a]} picture."})
        else:
            rows.append(
                {
                    "text": f"<image>A {COLORS[a]} picture.<|endofchunk|>Then <image>a {COLORS[b]} one.<|endofchunk|>",
                    "images": [images[a], images[b]],
                }
            )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


class StopAt(TrainerCallback):
    """Ends training after `step`, as an interrupted job would (the checkpoint of that step is written first)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def free_port() -> int:
    # Other jobs on this machine may hold accelerate's default port 29500.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_processes(launch: list[str], script: list[str], cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch <launch> <script>` on 2 CPU processes (gloo), one thread each, offline; asserts that it
    succeeded and returns the completed process (the ranks share its stdout)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *map(str, launch),
        "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
        "--mixed_precision", "no", *map(str, script),
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


class LossRecorder(TrainerCallback):
    """The training losses logged during this run, by step (a resumed run's history also holds the old steps)."""

    def __init__(self):
        self.losses = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes): equal digests mean equal weights, e.g.
    across the processes of a distributed run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# Lines that read as errors and that clean runs printed before (issue 26), each with what printed it.
NOISE = {
    "Failed to load CPU gemm_4bit_forward": "bitsandbytes, imported by peft wherever it is installed",
    "Setting accelerator to CPU": "DeepSpeed, imported by accelerate wherever it is installed",
    "The tokenizer has new PAD/BOS/EOS tokens": "the Trainer aligning configs that disagree with the tokenizer",
    "is incompatible with gradient checkpointing": "the language model's cache under activation checkpointing",
    "is_gradient_checkpointing": "transformers' deprecated name, read by peft and TRL",
    "is an Enum subclass": "torch about torchao's enums, imported by transformers wherever torchao is installed",
    "Traceback": "an error",
}


def noisy_lines(output: str) -> list[str]:
    """The lines of a run's output that hold one of `NOISE`."""
    return [line for line in output.splitlines() if any(pattern in line for pattern in NOISE)]


def run_fresh(command: list, cwd) -> subprocess.CompletedProcess:
    """`command` in a fresh process, offline, on one thread; raises with its output when it fails."""
    completed = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed
