# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""DPO on the toy world: the SFT model of `recipe.py` learns to prefer the correct answer over a hallucinated one
(a colour, shape or count that is not in the image), with LoRA on the language model as in the report.

Measured before and after, on held-out splits (other seeds than any training split):

- preference accuracy: the fraction of preference rows whose chosen (correct) answer gets a higher log-probability
  than the rejected (hallucinated) one;
- hallucination rate: the fraction of single-image questions (colour, shape, count) whose greedy answer is not the
  correct answer: an absent colour, shape or count, or anything else that is not the answer;
- absent-attribute rate: the part of those answers that name a colour, shape or count (one to four) the image does
  not show.

    python examples/dpo_toy_world.py --sft_model runs/toy-world/model --output_dir runs/toy-world-dpo
"""

import os
from dataclasses import dataclass
from pathlib import Path

from ..train.arguments import XGenMMDPOConfig
from ..train.dpo import build_dpo_trainer, preference_accuracy
from .data import split_rows
from .evaluation import hallucination_rates
from .recipe import post_training_start, train_and_save
from .settings import stage_arguments


@dataclass
class ToyWorldDPOSettings:
    """Sizes of the DPO run (about a minute on two CPU cores). The defaults are the report's setting: LoRA on the
    language model (`use_peft`, TRL's flag as in every stage), vision tower and resampler frozen; `sft_weight` adds
    TRL's NLL term on the chosen answers (`loss_type=["sigmoid", "sft"]`: without it, DPO from a model that already
    preferred every correct answer drifted and answered worse, see the README), and `freeze_vision` /
    `freeze_resampler` let DPO train the vision side."""

    steps: int = 120
    batch_size: int = 16
    learning_rate: float = 1e-4
    beta: float = 0.1
    sft_weight: float = 1.0
    use_peft: bool = True
    freeze_vision: bool = True
    freeze_resampler: bool = True
    eval_rows: int = 300
    seed: int = 0


def evaluate(model, processor, settings: ToyWorldDPOSettings) -> dict[str, float]:
    preferences = split_rows("held_out_preferences", settings.eval_rows, settings.seed)
    questions = split_rows("held_out_questions", settings.eval_rows, settings.seed)
    return {
        "preference_accuracy": preference_accuracy(model, processor, preferences),
        **hallucination_rates(model, processor, questions),
    }


def dpo_arguments(output_dir: Path, settings: ToyWorldDPOSettings) -> XGenMMDPOConfig:
    return stage_arguments(
        XGenMMDPOConfig,
        output_dir,
        settings.steps,
        settings.batch_size,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        loss_type=["sigmoid", "sft"] if settings.sft_weight else ["sigmoid"],
        loss_weights=[1.0, settings.sft_weight] if settings.sft_weight else None,
        lr_scheduler_type="cosine",
        warmup_steps=max(settings.steps // 10, 1),
        logging_steps=max(settings.steps // 5, 1),
        seed=settings.seed,
        freeze_resampler=settings.freeze_resampler,
    )


def run_toy_world_dpo(
    sft_model: str | os.PathLike, output_dir: str | os.PathLike, settings: ToyWorldDPOSettings | None = None
) -> dict[str, dict[str, float]]:
    """DPO of a saved toy-world SFT model on fresh preference rows, through the same entries as the DPO examples;
    saves the result (adapters merged) with its processor to `output_dir/model` and returns the held-out metrics
    `{"before": ..., "after": ...}`."""
    settings = settings or ToyWorldDPOSettings()
    output_dir = Path(output_dir)
    args = dpo_arguments(output_dir, settings)
    model, processor, policy = post_training_start(sft_model, settings, args.seed)
    before = evaluate(model, processor, settings)
    rows = split_rows("dpo_preferences", settings.steps * settings.batch_size, settings.seed)
    model = train_and_save(build_dpo_trainer(model, processor, rows, args, **policy), output_dir)
    return {"before": before, "after": evaluate(model, processor, settings)}


__all__ = ["ToyWorldDPOSettings", "evaluate", "run_toy_world_dpo"]
