# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Reinforcement learning of xGen-MM with TRL's `GRPOTrainer`, which trains the model and processor as they are
(`processing_class=processor`; a dataset of conversational prompts with `{"type": "image"}` placeholders and an
`images` column, each sample's completions seeing its own images). This module adds the package's policy:
`XGenMMGRPOConfig` (in `arguments`) and the vision tower frozen, LoRA when given a `peft_config`, as in every other
stage."""

from collections.abc import Callable, Sequence

from datasets import Dataset
from peft import LoraConfig
from transformers import PreTrainedModel, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from .arguments import XGenMMGRPOConfig
from .freezing import freeze_vision_tower


def build_grpo_trainer(
    model: PreTrainedModel,
    processor,
    prompts: Dataset,
    reward_funcs: Callable | Sequence[Callable],
    args: GRPOConfig | None = None,
    *,
    peft_config: LoraConfig | None = None,
    freeze_vision: bool = True,
    callbacks: list[TrainerCallback] | None = None,
) -> GRPOTrainer:
    """A `GRPOTrainer` with the policy applied.

    Args:
        model: an `XGenMMForConditionalGeneration` (fp32 master weights), e.g. the SFT model.
        processor: its `XGenMMProcessor`.
        prompts: TRL's conversational prompts: a `prompt` column of messages whose image blocks are placeholders, an
            `images` column with each prompt's images, and any columns the reward functions read.
        reward_funcs: TRL reward functions (`(completions, **columns) -> list[float]`).
        args: `XGenMMGRPOConfig` (default) or any `GRPOConfig`.
        peft_config: LoRA adapters to train (`lora_config(model)`), or `None` to train the weights.
        freeze_vision: keep the vision tower fixed (the released recipe).
    """
    args = args if args is not None else XGenMMGRPOConfig()
    if freeze_vision:
        freeze_vision_tower(model)
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=prompts,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )


__all__ = ["build_grpo_trainer"]
