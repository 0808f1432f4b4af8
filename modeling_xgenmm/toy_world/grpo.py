# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""GRPO on the toy world: a weak toy-world SFT model improves its held-out exact-match accuracy through TRL's
`GRPOTrainer`, with the toy world's own answer checker as the reward (1 for an answer the held-out evaluation would
count as right, 0 otherwise). Single- and two-image questions, the images passed to TRL per sample (`images` column).

    python examples/grpo_toy_world.py --output_dir runs/toy-world-grpo
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset

from ..train.arguments import XGenMMGRPOConfig
from ..train.grpo import build_grpo_trainer
from .data import split_rows
from .evaluation import answer_accuracy, normalised_answer
from .recipe import held_out_rows, kind_means, post_training_start, train_and_save
from .settings import ToyWorldSettings, stage_arguments


@dataclass
class ToyWorldGRPOSettings:
    """Sizes of the GRPO run. `batch_size` counts completions (`num_generations` per prompt), as TRL does. The weights
    train, not adapters (`use_peft=True` trains LoRA adapters, as in every stage); the vision tower stays frozen."""

    steps: int = 150
    batch_size: int = 32
    num_generations: int = 8
    max_completion_length: int = 12
    temperature: float = 0.7
    learning_rate: float = 2e-5
    beta: float = 0.0
    pair_fraction: float = 0.5
    eval_rows: int = 300
    use_peft: bool = False
    freeze_vision: bool = True
    seed: int = 0


def exact_match_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion, normalised as the held-out evaluation normalises greedy answers, is the answer."""
    return [
        float(normalised_answer(completion[0]["content"]) == expected)
        for completion, expected in zip(completions, answer)
    ]


def prompt_rows(count: int, settings: ToyWorldGRPOSettings) -> Dataset:
    """Questions in TRL's conversational format: the user turn as `prompt`, its pictures as `images`, the `answer`
    for the reward; seeds apart from every SFT and held-out split."""
    pairs = round(count * settings.pair_fraction)
    sources = [
        split_rows("grpo_questions", count - pairs, settings.seed),
        split_rows("grpo_pairs", pairs, settings.seed),
    ]
    rows = []
    for source in sources:
        for index in range(len(source)):
            row = source[index]
            rows.append({"prompt": row["messages"][:-1], "images": row["images"], "answer": row["answer"]})
    return Dataset.from_list(rows).shuffle(seed=settings.seed)


def grpo_arguments(output_dir: Path, settings: ToyWorldGRPOSettings) -> XGenMMGRPOConfig:
    return stage_arguments(
        XGenMMGRPOConfig,
        output_dir,
        settings.steps,
        settings.batch_size,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=max(settings.steps // 20, 1),
        seed=settings.seed,
        bf16=False,  # a model of a few MB: fp32 everywhere, on CPU or GPU
    )


def held_out_accuracy(model, processor, settings: ToyWorldGRPOSettings) -> dict[str, float]:
    """Held-out exact match per question kind, its single- and two-image means (greedy answers, as the toy world
    reports them), and `sampled_*`: the same means for one answer sampled at the training temperature (seeded), the
    quantity GRPO's reward optimizes."""
    rows = held_out_rows(ToyWorldSettings(eval_rows=settings.eval_rows, seed=settings.seed))
    accuracy = answer_accuracy(model, processor, rows)
    torch.manual_seed(settings.seed)
    sampled = answer_accuracy(model, processor, rows, temperature=settings.temperature)
    accuracy.update(kind_means(accuracy))
    accuracy.update({f"sampled_{name}": mean for name, mean in kind_means(sampled).items()})
    return accuracy


def run_toy_world_grpo(
    sft_model: str | os.PathLike, output_dir: str | os.PathLike, settings: ToyWorldGRPOSettings | None = None
) -> dict[str, dict[str, float]]:
    """GRPO of a saved toy-world SFT model through the package's GRPO stage; saves the result with its processor to
    `output_dir/model` and returns the held-out accuracy (the toy world's held-out split) `{"before": ..., "after":
    ...}` with the trainer's `log_history` (the training reward per logging step)."""
    settings = settings or ToyWorldGRPOSettings()
    output_dir = Path(output_dir)
    args = grpo_arguments(output_dir, settings)
    model, processor, policy = post_training_start(sft_model, settings, args.seed)
    before = held_out_accuracy(model, processor, settings)
    prompts = prompt_rows(settings.steps * settings.batch_size // settings.num_generations, settings)
    trainer = build_grpo_trainer(model, processor, prompts, exact_match_reward, args, **policy)
    model = train_and_save(trainer, output_dir)
    after = held_out_accuracy(model, processor, settings)
    return {"before": before, "after": after, "log_history": trainer.state.log_history}


__all__ = ["ToyWorldGRPOSettings", "exact_match_reward", "prompt_rows", "run_toy_world_grpo"]
