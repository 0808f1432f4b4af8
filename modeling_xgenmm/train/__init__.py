# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Training xGen-MM through the recipe of the report (pretrain -> SFT -> interleaved SFT -> DPO) on the library
trainers: `transformers.Trainer` and TRL's `SFTTrainer` and `DPOTrainer`, with the package's collators and policy.
Each module's job is in the README's layout table; what the example scripts use is importable from here."""

from .arguments import (
    DataArguments,
    PreferenceDataArguments,
    StageArguments,
    VLFeedbackArguments,
    XGenMMDPOConfig,
    XGenMMGRPOConfig,
    XGenMMModelConfig,
    XGenMMSFTConfig,
    XGenMMTrainingArguments,
)
from .collators import BadSampleError, XGenMMDataCollator, XGenMMPreferenceCollator
from .dpo import XGenMMDPOTrainer, build_dpo_trainer, preference_accuracy
from .freezing import freeze_vision_tower
from .grpo import build_grpo_trainer
from .loading import load_model_and_processor
from .lora import LORA_DEFAULTS, lora_config, lora_target_modules, peft_config_from_args
from .preference_data import load_vlfeedback, load_vlguard
from .qlora import quantization_config_from_args, refuse_quantization
from .resume import checkpoint_to_resume, train_resuming
from .rows import STAGES, load_rows
from .saving import merge_qlora_adapter, save_trained_model
from .sft import XGenMMTrainer, build_trainer, build_trl_sft_trainer, train_stage
from .streaming import SkipCounts, load_training_data, pretraining_stream, row_stream


__all__ = [
    "LORA_DEFAULTS",
    "STAGES",
    "BadSampleError",
    "DataArguments",
    "PreferenceDataArguments",
    "SkipCounts",
    "StageArguments",
    "VLFeedbackArguments",
    "XGenMMDPOConfig",
    "XGenMMGRPOConfig",
    "XGenMMDPOTrainer",
    "XGenMMDataCollator",
    "XGenMMModelConfig",
    "XGenMMPreferenceCollator",
    "XGenMMSFTConfig",
    "XGenMMTrainer",
    "XGenMMTrainingArguments",
    "build_dpo_trainer",
    "build_grpo_trainer",
    "build_trainer",
    "build_trl_sft_trainer",
    "checkpoint_to_resume",
    "freeze_vision_tower",
    "load_model_and_processor",
    "load_training_data",
    "load_rows",
    "load_vlfeedback",
    "load_vlguard",
    "lora_config",
    "lora_target_modules",
    "merge_qlora_adapter",
    "peft_config_from_args",
    "preference_accuracy",
    "pretraining_stream",
    "quantization_config_from_args",
    "refuse_quantization",
    "row_stream",
    "save_trained_model",
    "train_resuming",
    "train_stage",
]
