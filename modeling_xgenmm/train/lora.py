# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""LoRA as the report trains it: adapters on the language model's linear layers only (not the vision tower, the
resampler or `lm_head`), with one set of defaults."""

import re

from peft import LoraConfig
from torch import nn
from transformers import PreTrainedModel
from trl import ModelConfig


# Rank 64 on every linear layer of Phi-3-mini is 100.7M weights, 2.6% of its 3.82B: the report's "~2.5%".
LORA_DEFAULTS = {"r": 64, "lora_alpha": 128, "lora_dropout": 0.05}


def lora_target_modules(model: PreTrainedModel) -> str:
    """A PEFT `target_modules` regex matching every `nn.Linear` of the language model and nothing else: not the
    vision tower, not the resampler, not `lm_head` (which sits outside the language model)."""
    prefix = "model.language_model."
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name.startswith(prefix) and isinstance(module, nn.Linear)
    }
    if not names:
        raise ValueError(f"no nn.Linear layers under {prefix!r} in {type(model).__name__}")
    return rf"{re.escape(prefix)}.*\.({'|'.join(sorted(names))})"


def lora_config(model: PreTrainedModel, **overrides) -> LoraConfig:
    """The package's LoRA: `LORA_DEFAULTS` on the language model's linear layers (`lora_target_modules`), any
    `LoraConfig` field overridden by keyword (e.g. `modules_to_save=["resampler"]` to train the resampler fully next
    to the adapters)."""
    settings = {**LORA_DEFAULTS, "task_type": "CAUSAL_LM", **overrides}
    if settings.get("target_modules") is None:
        settings["target_modules"] = lora_target_modules(model)
    return LoraConfig(**settings)


def peft_config_from_args(model_args: ModelConfig, model: PreTrainedModel) -> LoraConfig | None:
    """`trl.get_peft_config` with the package's default targets: `None` without `--use_peft`."""
    if not model_args.use_peft:
        return None
    return lora_config(
        model,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        modules_to_save=model_args.lora_modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )


__all__ = ["LORA_DEFAULTS", "lora_config", "lora_target_modules", "peft_config_from_args"]
