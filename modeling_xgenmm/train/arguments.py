# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Every argument of the training stages, in one place (TRL keeps its configs apart from its trainers the same way):
the training configs with the package's policy (`PolicyFields`), the model arguments (`XGenMMModelConfig`, TRL's
`ModelConfig`) and the data arguments of the example scripts. A script's flags are the fields of the dataclasses it
parses, all of them declared here.

The training policy of the xGen-MM (BLIP-3) report, decided once for every stage:

- the vision tower stays frozen (and in eval mode) while the perceiver resampler and the language model train
  (`XGenMMModelConfig.freeze_vision`; `freezing`);
- LoRA, when asked for (`--use_peft`), adapts the language model's linear layers only, with one set of defaults
  (`lora.LORA_DEFAULTS`: rank 64, the report's ~2.5% of the language model);
- fp32 master weights, bf16 mixed precision where CUDA has bf16, fp32 elsewhere; activation checkpointing on;
  without any accelerator every process trains on the CPU (gloo across processes);
- QLoRA (`--load_in_4bit --use_peft`) quantizes the language model's linear layers only (`qlora`).
"""

import dataclasses
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, ModelConfig, SFTConfig

from .lora import LORA_DEFAULTS
from .rows import STAGES


# Whether the installed Trainer reads `activation_checkpointing` (5.23 on) or only `gradient_checkpointing`.
TRAINER_READS_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {
    field.name for field in dataclasses.fields(TrainingArguments)
}


def bf16_available() -> bool:
    """Whether bf16 mixed precision is the policy here: CUDA with bf16 support. CPUs train in fp32."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class PolicyFields:
    """The fields in which every training config (`XGenMMTrainingArguments`, `XGenMMSFTConfig`, `XGenMMDPOConfig`,
    `XGenMMGRPOConfig`) carries the policy (listed first among their bases, so these defaults win).

    - `bf16`: `None` (the default) means bf16 where `bf16_available()`, fp32 otherwise (TRL turns it on everywhere).
    - `activation_checkpointing`: on (non-reentrant): about 20% more compute for much less activation memory, which
      the 4B released models need on common GPUs. `gradient_checkpointing` is its deprecated alias.
    - `use_cpu`: forced on where torch sees no accelerator, so that a multi-process launch (`accelerate launch
      --multi_gpu --num_processes N`, `torchrun`) trains data-parallel on CPUs with gloo instead of starting N
      independent runs; DeepSpeed is told so too (`DS_ACCELERATOR=cpu` unless set), since accelerate imports it
      wherever it is installed and its own search for an accelerator warns that it found none.
    - `logging_steps`: 10, TRL's default, so that a short run logs its loss curve too (`TrainingArguments`: 500).
    - `start_over`: runs resume from the last complete checkpoint in `output_dir` (`train.resume`); `True` starts at
      step 0 instead, after moving the earlier `checkpoint-*` folders into `output_dir/previous-run-<timestamp>/`.
    """

    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: where CUDA has bf16."})
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Activation checkpointing (non-reentrant)."}
    )
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    logging_steps: float = field(
        default=10, metadata={"help": "Log every N steps (or, below 1, every such fraction of the run)."}
    )
    start_over: bool = field(
        default=False,
        metadata={
            "help": "Start at step 0 instead of resuming from output_dir's last checkpoint; the earlier checkpoints "
            "are moved into output_dir/previous-run-<timestamp>/."
        },
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = bf16_available() and not self.fp16
        if not torch.accelerator.is_available():
            self.use_cpu = True
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if not TRAINER_READS_ACTIVATION_CHECKPOINTING and self.gradient_checkpointing is None:
            # the Trainer of transformers < 5.23 only reads the older name
            self.gradient_checkpointing = self.activation_checkpointing
        super().__post_init__()


@dataclass
class TruncationPolicy:
    """`max_length`: 2048 tokens, the released models' truncation length, for the stages that truncate what they
    train on (all but GRPO, which generates its completions); truncation never cuts an image."""

    max_length: int | None = field(
        default=2048, metadata={"help": "Longest sequence in tokens; truncation never cuts an image."}
    )


@dataclass
class XGenMMModelConfig(ModelConfig):
    """TRL's `ModelConfig` with the package's LoRA defaults (`LORA_DEFAULTS`; without `--lora_target_modules`, the
    language model's linear layers) and the vision tower frozen, as in the report."""

    lora_r: int = field(default=LORA_DEFAULTS["r"], metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=LORA_DEFAULTS["lora_alpha"], metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=LORA_DEFAULTS["lora_dropout"], metadata={"help": "LoRA dropout."})
    freeze_vision: bool = field(default=True, metadata={"help": "Freeze the vision tower (the released recipe)."})


@dataclass
class XGenMMTrainingArguments(PolicyFields, TruncationPolicy, TrainingArguments):
    """`TrainingArguments` with the xGen-MM policy (`PolicyFields`: precision, activation checkpointing, CPU/gloo;
    `TruncationPolicy`: `max_length`) and the collator's settings.

    - `remove_unused_columns`: `False`; the collator needs the raw rows (the Trainer would strip their keys).
    - `ddp_find_unused_parameters`: on, so that a batch without images (whose resampler gets no gradient) does not
      stall DDP; non-reentrant checkpointing works with it.
    - `on_bad_sample`: `"raise"` on a bad row (the default), or `"skip"` it and count it.
    - `accelerator_config.dispatch_batches`: off unless set: with a streamed dataset every process reads its own
      share (accelerate's `IterableDataset.shard` per file, or batches in turn), so batches with different images
      never have to be split from one process's batch.
    - `padding_free` (TRL's `SFTConfig` name): each batch's rows packed into one row, without padding (see
      `XGenMMDataCollator`); eager, sdpa, flex or flash attention.
    """

    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False for the xGen-MM collator."})
    ddp_find_unused_parameters: bool | None = field(
        default=True, metadata={"help": "DDP find_unused_parameters (batches without images leave some unused)."}
    )
    on_bad_sample: str = field(
        default="raise",
        metadata={"help": "'raise' on a bad row, or 'skip' it and count it.", "choices": ["raise", "skip"]},
    )
    padding_free: bool = field(
        default=False, metadata={"help": "Pack each batch's rows into one row without padding (position_ids)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.accelerator_config.dispatch_batches is None:
            # accelerate's default for an iterable dataset (a stream) is to read every batch on the main process and
            # split it across processes, which needs equal shapes on every process: the images of a batch differ.
            # Each process reads its own share of the stream instead (its own shards, or batches in turn).
            self.accelerator_config.dispatch_batches = False


@dataclass
class XGenMMSFTConfig(PolicyFields, TruncationPolicy, SFTConfig):
    """`SFTConfig` with the xGen-MM policy (`PolicyFields`, `TruncationPolicy`) and assistant-only loss (the chat
    templates mark each answer and its `<|end|>`)."""

    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on assistant turns only."})


@dataclass
class XGenMMDPOConfig(PolicyFields, TruncationPolicy, DPOConfig):
    """`DPOConfig` with the xGen-MM policy (`PolicyFields`, `TruncationPolicy`).

    - `max_length`: with `XGenMMPreferenceCollator` (what `build_dpo_trainer` and `XGenMMDPOTrainer` use) truncation
      only ever shortens completions: a prompt that does not fit, images included, raises. TRL's own collator cuts
      every sequence at `max_length`, images or not.
    - `remove_unused_columns`: `False`, so that rows keep their `id` for error messages.
    - `freeze_resampler`: keep the resampler fixed in full DPO (DPO adapts the language model's answers; frozen image
      features can then be shared across the step).
    - `share_image_features`: encode each image once per step for all four forwards (see `XGenMMDPOTrainer`);
      `None` uses it where it is exact and falls back to TRL's path elsewhere, `True` requires it, `False` never.
    """

    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the rows' other keys (their id)."})
    freeze_resampler: bool = field(default=True, metadata={"help": "Keep the resampler fixed in full DPO."})
    share_image_features: bool | None = field(
        default=None,
        metadata={
            "help": "Encode each image once per step for policy and reference, chosen and rejected (exact while the "
            "vision tower and resampler are frozen). Default: where exact; True: required; False: TRL's path."
        },
    )


@dataclass
class XGenMMGRPOConfig(PolicyFields, GRPOConfig):
    """`GRPOConfig` with the xGen-MM policy (`PolicyFields`). GRPO truncates nothing it trains on: its completions are
    generated up to `max_completion_length`."""


@dataclass
class DataArguments:
    """Training rows from JSON / JSONL files (formats in `modeling_xgenmm.train.rows`), or web-corpus shards
    (`.parquet` OBELICS-style documents, `.tar` webdataset caption shards), which are always streamed
    (`modeling_xgenmm.train.streaming`)."""

    data: list[str] = field(
        metadata={
            "help": "JSON / JSONL files of training rows (image paths relative to the file), or .parquet / .tar "
            "web-corpus shards (streamed)."
        }
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream JSON / JSONL rows file by file instead of loading them (max_steps)."}
    )
    shuffle_buffer: int = field(
        default=1000, metadata={"help": "Records shuffled together in a stream (0: file order); seeded by --seed."}
    )
    allow_image_urls: bool = field(
        default=False,
        metadata={
            "help": "Download images that the data names by URL (off: a streamed record or row naming one is skipped "
            "and counted, rows read into memory are refused)."
        },
    )


@dataclass
class StageArguments(DataArguments):
    """The data of one stage on `transformers.Trainer` and which stage it is (`examples/train.py --stage`)."""

    stage: str = field(
        kw_only=True,
        metadata={
            "help": "The recipe's stage, which decides the row formats it takes: pretrain (documents, caption pairs), "
            "sft (conversations), interleaved_sft (conversations with several images).",
            "choices": list(STAGES),
        },
    )


@dataclass
class PreferenceDataArguments(DataArguments):
    """Preference datasets as published (VLFeedback, VLGuard), with their image folder."""

    images_dir: str | None = field(default=None, metadata={"help": "Image folder; default: the data file's folder."})


@dataclass
class VLFeedbackArguments(PreferenceDataArguments):
    """VLFeedback's preference data and the rating its chosen responses need (`preference_data.load_vlfeedback`)."""

    min_chosen_score: float = field(
        default=3.0, metadata={"help": "Drop rows whose best response averages below this rating (1-5)."}
    )


__all__ = [
    "DataArguments",
    "PolicyFields",
    "PreferenceDataArguments",
    "StageArguments",
    "TruncationPolicy",
    "VLFeedbackArguments",
    "XGenMMDPOConfig",
    "XGenMMGRPOConfig",
    "XGenMMModelConfig",
    "XGenMMSFTConfig",
    "XGenMMTrainingArguments",
    "bf16_available",
]
