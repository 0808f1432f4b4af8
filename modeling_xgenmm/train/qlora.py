# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""QLoRA (`--load_in_4bit --use_peft`): bitsandbytes quantizes the language model's linear layers only; the vision
tower, the resampler and `lm_head` stay in full precision (`QUANTIZATION_SKIP_MODULES`), and only LoRA adapters
train on top. Merging the trained adapter back is `saving.merge_qlora_adapter`."""

import copy
from pathlib import Path

import torch
from peft import prepare_model_for_kbit_training
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig, PreTrainedModel
from trl import ModelConfig, get_quantization_config

from .arguments import bf16_available


# What bitsandbytes leaves in full precision: everything outside the language model. transformers matches these as
# module-name prefixes from the model's root (`should_convert_module`); given explicitly, they replace its default
# skips, so `lm_head` is listed too.
QUANTIZATION_SKIP_MODULES = ["model.vision_tower", "model.resampler", "lm_head"]


def quantization_config_from_args(model_args: ModelConfig) -> BitsAndBytesConfig | None:
    """`trl.get_quantization_config` with the package's policy: `None` without `--load_in_4bit` / `--load_in_8bit`;
    otherwise the language model's linear layers only (`QUANTIZATION_SKIP_MODULES` stay in full precision), computing
    in bf16 where `bf16_available()` and in fp32 elsewhere (TRL's `--dtype` is not used: the master weights are fp32).

    Quantized weights cannot be trained, so quantization needs `--use_peft` (QLoRA: LoRA adapters on a 4-bit base).
    """
    quantization_config = get_quantization_config(model_args)
    if quantization_config is None:
        return None
    if not model_args.use_peft:
        flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
        raise ValueError(
            f"{flag} needs --use_peft: quantized weights cannot be trained, only LoRA adapters on top of them (QLoRA)"
        )
    quantization_config.llm_int8_skip_modules = list(QUANTIZATION_SKIP_MODULES)
    if quantization_config.load_in_4bit:
        quantization_config.bnb_4bit_compute_dtype = torch.bfloat16 if bf16_available() else torch.float32
    return quantization_config


def refuse_quantization(model_args: ModelConfig, stage: str) -> None:
    """Raises for `--load_in_4bit` / `--load_in_8bit` in a script that does not train quantized models, instead of
    ignoring the flag."""
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ValueError(
            f"{stage} does not train on a quantized model: leave out --load_in_4bit / --load_in_8bit (use --use_peft "
            "for LoRA in full precision); QLoRA is in the pretraining and SFT scripts"
        )


def load_quantized_model(
    name_or_path: str | Path, quantization_config: BitsAndBytesConfig, trust_remote_code: bool = False
) -> PreTrainedModel:
    """The model of a Hub id or folder with weights, quantized by bitsandbytes as `quantization_config` says (without
    `llm_int8_skip_modules`, the language model only: `QUANTIZATION_SKIP_MODULES`), every other weight in fp32 and
    frozen (`peft.prepare_model_for_kbit_training`; activation checkpointing stays the training arguments' choice)."""
    if quantization_config.llm_int8_skip_modules is None:
        quantization_config = copy.deepcopy(quantization_config)
        quantization_config.llm_int8_skip_modules = list(QUANTIZATION_SKIP_MODULES)
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path,
        dtype=torch.float32,
        quantization_config=quantization_config,
        trust_remote_code=trust_remote_code,
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


__all__ = ["QUANTIZATION_SKIP_MODULES", "load_quantized_model", "quantization_config_from_args", "refuse_quantization"]
