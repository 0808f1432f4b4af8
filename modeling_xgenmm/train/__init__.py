# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Training xGen-MM through the recipe of the report (pretrain -> SFT -> interleaved SFT -> DPO) on the library
trainers: `transformers.Trainer` and TRL's `SFTTrainer` and `DPOTrainer`, with the package's collators and policy.

| module | what it holds |
|---|---|
| `policy` | frozen vision tower, LoRA targets and defaults, precision, QLoRA, loading the model to train |
| `qlora` | merging a QLoRA adapter into the full-precision base |
| `rows` | the row formats (conversations, documents, captions, preferences) and reading JSON / JSONL files |
| `collators` | `XGenMMDataCollator` (Trainer) and `XGenMMPreferenceCollator` (DPO) |
| `sft` | pretraining and SFT stages on `Trainer`, SFT on TRL's `SFTTrainer` |
| `dpo` | DPO and safety tuning on TRL's `DPOTrainer` |
| `preference_data` | VLFeedback and VLGuard as preference rows |
| `arguments` | the data arguments of the example scripts |
| `resume` | which checkpoint a run resumes from; half-written checkpoints skipped, `start_over` |
| `streaming` | web-scale corpora as streams: OBELICS-style documents, webdataset caption shards, JSON rows |
"""

from .arguments import DataArguments, PreferenceDataArguments
from .collators import BadSampleError, XGenMMDataCollator, XGenMMPreferenceCollator
from .dpo import XGenMMDPOConfig, XGenMMDPOTrainer, build_dpo_trainer, preference_accuracy, save_trained_model
from .policy import (
    LORA_DEFAULTS,
    XGenMMModelConfig,
    freeze_vision_tower,
    load_model_and_processor,
    lora_config,
    lora_target_modules,
    peft_config_from_args,
    quantization_config_from_args,
    refuse_quantization,
)
from .preference_data import load_vlfeedback, load_vlguard
from .qlora import merge_qlora_adapter
from .resume import checkpoint_to_resume
from .rows import load_rows
from .sft import (
    STAGES,
    XGenMMSFTConfig,
    XGenMMTrainer,
    XGenMMTrainingArguments,
    build_trainer,
    build_trl_sft_trainer,
    train_stage,
)
from .streaming import SkipCounts, pretraining_stream, row_stream


__all__ = [
    "LORA_DEFAULTS",
    "STAGES",
    "BadSampleError",
    "DataArguments",
    "PreferenceDataArguments",
    "XGenMMDPOConfig",
    "XGenMMDPOTrainer",
    "XGenMMDataCollator",
    "XGenMMModelConfig",
    "XGenMMPreferenceCollator",
    "XGenMMSFTConfig",
    "SkipCounts",
    "XGenMMTrainer",
    "XGenMMTrainingArguments",
    "build_dpo_trainer",
    "build_trainer",
    "build_trl_sft_trainer",
    "checkpoint_to_resume",
    "freeze_vision_tower",
    "load_model_and_processor",
    "load_rows",
    "load_vlfeedback",
    "load_vlguard",
    "lora_config",
    "lora_target_modules",
    "merge_qlora_adapter",
    "peft_config_from_args",
    "pretraining_stream",
    "preference_accuracy",
    "quantization_config_from_args",
    "refuse_quantization",
    "row_stream",
    "save_trained_model",
    "train_stage",
]
