# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Memory per process of one SFT training step of the `small` preset on 2 processes: full-shard FSDP2
(`examples/accelerate/fsdp2.yaml`) against plain data parallel (`examples/accelerate/ddp.yaml`). Prints a markdown
table.

Each run is `accelerate launch --config_file <yaml> --num_processes 2` of this file as a worker: seeded random weights
of the preset, the package's training policy (frozen vision tower, fp32 master weights, AdamW), `Trainer.train` for
one step on the preset's toy-world rows (per process). Per process it reports:

- model state: bytes of the parameters this process holds (its shards under FSDP2), their gradients (one per
  trainable parameter) and the optimizer's state (AdamW's two moments), counted from the tensors after the step;
- step peak: the process's peak anonymous resident memory (`peak_memory.PeakMemory`: heap and tensors, not the
  shared libraries) during the step, sampled every millisecond, and its increase over the memory at the step's start.
  On a GPU the same two are the CUDA allocator's.

Without a GPU the processes run on the CPU with gloo. accelerate enables FSDP only for GPU-like process groups and
would quietly train data-parallel instead; `allow_fsdp_on_cpu` lets its FSDP2 path (torch's `fully_shard`, which
runs on CPU tensors with gloo) run there, which is what makes this measurement, and the CPU tests, possible.

    python -m benchmarks.sharded_memory
"""

import argparse
import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"FSDP2 full shard": "fsdp2.yaml", "DDP": "ddp.yaml"}
MIB = 2**20


def allow_fsdp_on_cpu() -> None:
    """Makes accelerate keep its FSDP plugin for a CPU (gloo) process group, where it would otherwise fall back to
    data parallel without a word (`AcceleratorState` enables FSDP for GPU-like process groups only). Only the
    distributed type changes; the plugin, the wrapping and the sharding are accelerate's and torch's own."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if getattr(AcceleratorState, "_fsdp_on_cpu", False):
        return
    original_init = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        # Every `AcceleratorState()` copies the process group's distributed type again; the plugin is kept.
        fsdp_plugin = fsdp_plugin or getattr(self, "fsdp_plugin", None)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init
    AcceleratorState._fsdp_on_cpu = True


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes this process holds for `tensor`: its local shard for a DTensor."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def model_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Parameters, gradients (one per trainable parameter) and optimizer state held by this process, in bytes."""
    parameters = list(model.parameters())
    optimizer_state = sum(
        tensor_bytes(value) for state in optimizer.state.values() for value in state.values() if value.dim() > 0
    )
    return {
        "parameters": sum(tensor_bytes(parameter) for parameter in parameters),
        "gradients": sum(tensor_bytes(parameter) for parameter in parameters if parameter.requires_grad),
        "optimizer_state": optimizer_state,
    }


def release_freed_memory() -> None:
    """Returns freed heap pages to the system (glibc), so resident memory shows what is held, not what was."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def worker(preset_name: str, output: str) -> None:
    """One process of a launched run: one training step, then this process's numbers appended to `output`."""
    from transformers import TrainerCallback

    from modeling_xgenmm.checkpoint.contents import build_processor
    from xgenmm_processing import XGenMMTokenizer

    from .dpo_cost import sft_trainer_and_batch, toy_preference_rows
    from .peak_memory import PeakMemory
    from .presets import PRESETS, TOKENIZER_FOLDER, preset_config
    from .run import build_model

    allow_fsdp_on_cpu()
    preset = PRESETS[preset_name]
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(preset, tokenizer)
    processor = build_processor(config, tokenizer)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = build_model(config, torch.float32, device)
    rows = toy_preference_rows(preset.train_rows)
    with tempfile.TemporaryDirectory() as workdir:
        trainer, _ = sft_trainer_and_batch(model, processor, rows, workdir, lora=False)
        trainer.args.max_steps = 1
        del model
        measured = {}

        class MeasureStep(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                release_freed_memory()
                measured["memory"] = PeakMemory(device).__enter__()

            def on_optimizer_step(self, args, state, control, **kwargs):
                measured["state"] = model_state_bytes(trainer.model, trainer.optimizer)

            def on_step_end(self, args, state, control, **kwargs):
                measured["memory"].__exit__(None, None, None)

        trainer.add_callback(MeasureStep())
        trainer.train()
    accelerator = trainer.accelerator
    report = {
        "rank": accelerator.process_index,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        **measured["state"],
        "step_peak": measured["memory"].peak,
        "step_increase": measured["memory"].increase,
    }
    with open(output, "a") as file:
        file.write(json.dumps(report) + "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(config_file: str, preset_name: str, output: Path) -> list[dict]:
    """Runs the worker on 2 processes with `examples/accelerate/<config_file>`; returns one report per process."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO_ROOT / "examples" / "accelerate" / config_file),
        "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
        "--mixed_precision", "no",
        "-m", "benchmarks.sharded_memory", "--worker", "--preset", preset_name, "--output", str(output),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{config_file} run failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return sorted((json.loads(line) for line in output.read_text().splitlines()), key=lambda report: report["rank"])


def markdown(results: dict[str, list[dict]]) -> str:
    """One row per run and process, in MiB."""
    columns = ["run", "process", "distributed type", "parameters", "gradients", "optimizer state", "model state"]
    columns += ["step peak", "step increase"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, reports in results.items():
        for report in reports:
            state = report["parameters"] + report["gradients"] + report["optimizer_state"]
            values = [report[key] / MIB for key in ("parameters", "gradients", "optimizer_state")]
            values += [state / MIB, report["step_peak"] / MIB, report["step_increase"] / MIB]
            cells = [name, str(report["rank"]), report["distributed_type"], *(f"{value:.1f}" for value in values)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.preset, args.output)
        return
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, config_file in CONFIGS.items():
            results[name] = launch(config_file, args.preset, Path(workdir) / f"{config_file}.jsonl")
    print(f"Memory per process of one SFT training step, preset {args.preset!r}, 2 processes (MiB):\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
