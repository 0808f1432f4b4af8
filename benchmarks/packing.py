# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Padding-free batches against padded ones: real (non-padding) tokens per second of a training step (forward +
backward) and the fraction of padding tokens, on the toy world's rows and model (`modeling_xgenmm.toy_world`).

Both stages of the toy-world recipe, with its batch sizes: pretraining (caption pairs and interleaved documents, the
vision tower training) and fine-tuning (single- and two-image questions, the vision tower frozen). Every batching
trains a fresh model of the same seed on the same batches (`build_trainer`, `XGenMMTrainingArguments(padding_free=)`,
no activation checkpointing, as the toy world); the first step is a warm-up, the next `--steps` are timed (the
collator's time is not counted: it is the same work either way). Prints a markdown table.

    python -m benchmarks.packing [--config hub_configs/toy-world] [--steps 5] [--threads 1] [--attention sdpa]
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from modeling_xgenmm.toy_world.recipe import fine_tuning_rows, pretraining_rows
from modeling_xgenmm.toy_world.settings import ToyWorldSettings
from modeling_xgenmm.train.arguments import XGenMMTrainingArguments
from modeling_xgenmm.train.loading import load_model_and_processor
from modeling_xgenmm.train.sft import build_trainer


REPO_ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("stage", "batching", "rows/step", "real tokens/step", "padding fraction", "step ms", "real tokens/s")
# stage -> (the recipe's stage name, its rows, its batch size, whether the vision tower trains), as in the toy world.
STAGES = {
    "pretrain": ("pretrain", pretraining_rows, "pretrain_batch_size", True),
    "sft": ("interleaved_sft", fine_tuning_rows, "sft_batch_size", False),
}


def stage_batches(stage: str, steps: int, batch_size: int | None, seed: int = 0) -> list[list[dict]]:
    """`steps + 1` batches (a warm-up and the timed ones) of the stage's toy-world rows, shuffled as a Trainer would
    (a fixed seed, so that every batching gets the same batches)."""
    _, make_rows, size_field, _ = STAGES[stage]
    size = batch_size or getattr(ToyWorldSettings(), size_field)
    settings = ToyWorldSettings(**{size_field: size, f"{stage}_steps": steps + 1})
    rows = make_rows(settings)
    order = random.Random(seed).sample(range(len(rows)), len(rows))
    return [[rows[index] for index in order[step * size : (step + 1) * size]] for step in range(steps + 1)]


def measure(config: str, stage: str, batches: list[list[dict]], padding_free: bool, attention: str) -> dict:
    """Times a training step on each batch after the first; returns the table's numbers."""
    recipe_stage, _, _, vision_trains = STAGES[stage]
    model, processor = load_model_and_processor(config, seed=0)
    model.set_attn_implementation(attention)
    arguments = XGenMMTrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=len(batches[0]),
        padding_free=padding_free,
        activation_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
    )
    trainer = build_trainer(
        model, processor, batches[0], recipe_stage, arguments, freeze_vision=not vision_trains, check_rows=False
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this bypasses
    real = total = 0
    seconds = 0.0
    for step, rows in enumerate(batches):
        batch = trainer._prepare_inputs(trainer.data_collator(rows))
        trainer.model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        trainer.training_step(trainer.model, batch)
        if step == 0:
            continue  # warm-up
        seconds += time.perf_counter() - start
        mask = batch.get("attention_mask")
        real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        total += batch["input_ids"].numel()
    steps = len(batches) - 1
    return {
        "stage": stage,
        "batching": "padding-free" if padding_free else "padded",
        "rows/step": len(batches[0]),
        "real tokens/step": real / steps,
        "padding fraction": 1 - real / total,
        "step ms": 1000 * seconds / steps,
        "real tokens/s": real / seconds,
    }


def run(config: str, stages: list[str], steps: int, batch_size: int | None = None, attention: str = "sdpa") -> list:
    """The table's rows: for each stage, padded then padding-free batches of the same rows."""
    results = []
    for stage in stages:
        batches = stage_batches(stage, steps, batch_size)
        results += [measure(config, stage, batches, padding_free, attention) for padding_free in (False, True)]
    return results


def format_table(results: list[dict]) -> str:
    """A markdown table of `run`'s results, with each padding-free row's speed-up over the padded one before it."""
    lines = ["| " + " | ".join((*COLUMNS, "speed-up")) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    padded_speed = {}
    for result in results:
        if result["batching"] == "padded":
            padded_speed[result["stage"]] = result["real tokens/s"]
        speed_up = result["real tokens/s"] / padded_speed[result["stage"]]
        cells = (
            result["stage"],
            result["batching"],
            str(result["rows/step"]),
            f"{result['real tokens/step']:.0f}",
            f"{result['padding fraction']:.3f}",
            f"{result['step ms']:.0f}",
            f"{result['real tokens/s']:.0f}",
            f"{speed_up:.2f}x",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "hub_configs" / "toy-world"))
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per batching, after one warm-up step")
    parser.add_argument("--batch_size", type=int, default=None, help="rows per step; the toy world's by default")
    parser.add_argument("--attention", default="sdpa", help="the language model's attention implementation")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args.config, args.stages, args.steps, args.batch_size, args.attention)
    print(f"{Path(args.config).name}, {args.attention} attention, {args.threads} thread(s), {args.steps} timed steps")
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
