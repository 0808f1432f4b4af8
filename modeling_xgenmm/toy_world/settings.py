# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The toy-world run's sizes, default config folder and trainer arguments, apart from the recipe so that the `xgenmm`
command line can read them without importing the trainers."""

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


DEFAULT_CONFIG = Path(str(resources.files("xgenmm_hub_configs").joinpath("toy-world")))


@dataclass
class ToyWorldSettings:
    """Sizes of the run (the README's "Toy world" section gives the time the defaults take on two CPU cores).

    The same-shape / same-colour verdicts of the two-image questions are the last thing the model learns, at a step
    that varies with the seed; the fine-tuning defaults (three quarters two-image rows, `pair_fraction`, in batches of
    8) move that step earlier. The README's "Toy world" section says how they were chosen. `quick()` is a shortened
    run for tests."""

    pretrain_steps: int = 600
    sft_steps: int = 4000
    pretrain_batch_size: int = 16
    sft_batch_size: int = 8
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    pair_fraction: float = 0.75
    eval_rows: int = 300
    seed: int = 0
    freeze_vision_in_sft: bool = True

    def __post_init__(self):
        for name in ("pretrain_steps", "sft_steps", "pretrain_batch_size", "sft_batch_size", "eval_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"ToyWorldSettings.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.pair_fraction <= 1.0:
            raise ValueError(
                "ToyWorldSettings.pair_fraction is the share of two-image rows in fine-tuning, between 0 and 1; got "
                f"{self.pair_fraction}"
            )

    @classmethod
    def quick(cls) -> "ToyWorldSettings":
        return cls(pretrain_steps=150, sft_steps=500, eval_rows=60)


def stage_arguments(config_class: type, output_dir: str | os.PathLike, steps: int, batch_size: int, **stage):
    """The trainer arguments of a toy-world stage, one policy for all of them (pretraining, SFT, DPO, GRPO):
    `config_class` (a package training config) with `steps` steps of `batch_size` rows, a loss logged ten times a
    run, no checkpoints, no reporting, no progress bars, and without activation checkpointing (a model of a few MB:
    recomputing activations would only cost time); `stage` sets the stage's own fields (learning rate, schedule,
    seed, ...) and may override any of these."""
    policy = {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": batch_size,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "activation_checkpointing": False,
        "logging_steps": max(steps // 10, 1),
        "save_strategy": "no",
        "report_to": [],
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    return config_class(**{**policy, **stage})


__all__ = ["DEFAULT_CONFIG", "ToyWorldSettings", "stage_arguments"]
