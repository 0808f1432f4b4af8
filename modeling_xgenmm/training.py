# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Training policy for xGen-MM and the stage functions that the example scripts and recipes call.

Not a Hub file. The policy follows the xGen-MM (BLIP-3) report: the vision tower stays frozen in every stage while
the perceiver resampler and the language model train; LoRA, when asked for, adapts the language model's linear layers
only; bf16 mixed precision where the hardware has it (CUDA with bf16), fp32 otherwise; activation checkpointing on.

Stages (all use `transformers.Trainer` with `XGenMMDataCollator`; they differ in the rows they accept):

- `"pretrain"`: interleaved documents and caption pairs, every text token a target.
- `"sft"`: conversations (single-image instruction data), assistant turns as targets.
- `"interleaved_sft"`: conversations with several images each, assistant turns as targets.

`build_trl_sft_trainer` runs the same SFT through TRL's `SFTTrainer` and its own vision collator.
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging
from trl import SFTConfig, SFTTrainer

from xgenmm_processing.collators import XGenMMDataCollator
from xgenmm_processing.rows import conversation_messages, row_kind


logger = logging.get_logger(__name__)

STAGES = {
    "pretrain": ("document", "caption"),
    "sft": ("conversation",),
    "interleaved_sft": ("conversation",),
}
TRL_CONVERSATION_FEATURES = Features(
    {
        "messages": List(
            {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
        ),
        "images": List(ImageFeature()),
    }
)
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def bf16_available() -> bool:
    """Whether bf16 mixed precision is the policy here: CUDA with bf16 support. CPUs train in fp32."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _apply_policy(args) -> None:
    """Resolves the policy defaults of `XGenMMTrainingArguments` / `XGenMMSFTConfig` before their own checks."""
    if args.bf16 is None:
        args.bf16 = bf16_available() and not args.fp16
    # Without any accelerator, train on the CPU, and across processes with gloo when launched with several
    # (`accelerate launch --multi_gpu --num_processes N` or `torchrun`); transformers would otherwise start
    # N independent single-process runs.
    if not torch.accelerator.is_available():
        args.use_cpu = True


@dataclass
class XGenMMTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the xGen-MM policy as defaults.

    - `bf16`: `None` (the default) means bf16 where `bf16_available()`, fp32 otherwise.
    - `remove_unused_columns`: `False`; the collator needs the raw rows (the Trainer would strip their keys).
    - `activation_checkpointing`: on (non-reentrant), as in TRL: about 20% more compute for much less activation
      memory, which the 4B released models need on common GPUs.
    - `ddp_find_unused_parameters`: on, so that a batch without images (whose resampler gets no gradient) does not
      stall DDP; non-reentrant checkpointing works with it.
    - `use_cpu`: forced on where torch sees no accelerator, so that a multi-process launch trains data-parallel on
      CPUs (gloo).
    """

    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: where CUDA has bf16."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False for the xGen-MM collator."})
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Activation checkpointing (non-reentrant)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=True, metadata={"help": "DDP find_unused_parameters (batches without images leave some unused)."}
    )

    def __post_init__(self):
        _apply_policy(self)
        super().__post_init__()


@dataclass
class XGenMMSFTConfig(SFTConfig):
    """`SFTConfig` with the xGen-MM policy: bf16 only where `bf16_available()` (TRL turns it on everywhere), CPU
    (gloo across processes) where torch sees no accelerator, assistant-only loss (the chat templates mark each answer
    and its `<|end|>`), and the released models' SFT truncation length, 2048."""

    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: where CUDA has bf16."})
    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on assistant turns only."})
    max_length: int | None = field(
        default=2048, metadata={"help": "Longest sequence in tokens; a truncation that would cut an image raises."}
    )
    # TRL turns checkpointing on under the deprecated name, which warns; the same default under the new one.
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Activation checkpointing (non-reentrant)."}
    )

    def __post_init__(self):
        _apply_policy(self)
        super().__post_init__()


@dataclass
class ScriptArguments:
    """What every example script takes besides its trainer's arguments."""

    model: str = field(
        metadata={"help": "Model folder or Hub id; a folder without weights (e.g. hub_configs/tiny-random) is "
                  "initialised at random with --seed."}
    )
    data: list[str] = field(
        metadata={"help": "JSON / JSONL files of training rows (image paths relative to the file)."}
    )
    freeze_vision: bool = field(default=True, metadata={"help": "Freeze the vision tower (the released recipe)."})
    lora: bool = field(default=False, metadata={"help": "LoRA on the language model's linear layers."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    print_weights_sha256: bool = field(
        default=False, metadata={"help": "Print each process's final weights digest (replicas must agree)."}
    )

    def lora_config(self, model: PreTrainedModel) -> LoraConfig | None:
        if not self.lora:
            return None
        return lora_config(model, r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout)


@dataclass
class CollatorArguments:
    """`XGenMMDataCollator` settings for the `transformers.Trainer` scripts."""

    max_length: int | None = field(default=2048, metadata={"help": "Truncation length in tokens (never cuts images)."})
    on_bad_sample: str = field(
        default="raise",
        metadata={"help": "'raise' on a bad row, or 'skip' it and count it.", "choices": ["raise", "skip"]},
    )


def freeze_vision_tower(model: nn.Module) -> None:
    """Stops gradients to the vision tower (the released models never train it); resampler and LM stay trainable.
    `XGenMMModel.train()` then keeps the frozen tower in eval mode."""
    vision_tower = _xgenmm_backbone(model).vision_tower
    vision_tower.requires_grad_(False)


def _xgenmm_backbone(model: nn.Module) -> nn.Module:
    """The `XGenMMModel` inside an `XGenMMForConditionalGeneration`, a PEFT wrapper, or itself."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    backbone = getattr(model, "model", model)
    if not all(hasattr(backbone, name) for name in ("vision_tower", "resampler", "language_model")):
        raise TypeError(f"expected an xGen-MM model (vision_tower, resampler, language_model), got {type(model)}")
    return backbone


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


def lora_config(
    model: PreTrainedModel,
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: str | list[str] | None = None,
    modules_to_save: list[str] | None = None,
) -> LoraConfig:
    """LoRA on the language model's linear layers (`lora_target_modules`) unless `target_modules` says otherwise.

    `modules_to_save=["resampler"]` trains the resampler fully next to the adapters (by default only adapters train).
    """
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_target_modules(model) if target_modules is None else target_modules,
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
    )


def apply_lora(model: PreTrainedModel, config: LoraConfig | None = None) -> PeftModel:
    """Wraps `model` with LoRA adapters (`lora_config(model)` by default); only adapter weights stay trainable."""
    return get_peft_model(model, config if config is not None else lora_config(model))


def load_model_and_processor(name_or_path: str | Path, seed: int = 0, trust_remote_code: bool = False):
    """The model and processor of a Hub id or folder, in fp32 (the master weights of mixed-precision training).

    A local folder with a `config.json` but no weights (e.g. `hub_configs/tiny-random`) gives a model initialised
    at random with `seed`, identical on every process.
    """
    path = Path(name_or_path)
    processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if path.is_dir() and not any(file.name.endswith(WEIGHT_FILE_SUFFIXES) for file in path.iterdir()):
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} holds neither weights nor a config.json")
        logger.warning(f"{path} holds no weights: initialising the model at random (seed {seed})")
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
        return model.float(), processor
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    return model, processor


def build_trainer(
    model: PreTrainedModel,
    processor,
    train_rows: Sequence[dict],
    stage: str,
    args: TrainingArguments | None = None,
    *,
    eval_rows: Sequence[dict] | None = None,
    max_length: int | None = 2048,
    on_bad_sample: str = "raise",
    freeze_vision: bool = True,
    lora: bool | LoraConfig = False,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """A `transformers.Trainer` for one stage, with the policy applied and `XGenMMDataCollator` as collator.

    Args:
        model: an `XGenMMForConditionalGeneration` (fp32 master weights).
        processor: its `XGenMMProcessor`; the Trainer saves it with every checkpoint.
        train_rows, eval_rows: any sequence of rows (a list, a `datasets.Dataset`); see `xgenmm_processing.rows`.
        stage: `"pretrain"`, `"sft"` or `"interleaved_sft"`; decides which row formats are accepted.
        args: `XGenMMTrainingArguments` (or `TrainingArguments` with `remove_unused_columns=False`).
        max_length: truncation length in tokens (never inside an image; see the collator), `None` for none.
        on_bad_sample: `"raise"` or `"skip"` (skipped rows are counted in `trainer.data_collator.num_skipped`).
        freeze_vision: freeze the vision tower (the released recipe); ignored with LoRA, where only adapters train.
        lora: `True` for `lora_config(model)`, or a `LoraConfig`.
    """
    if stage not in STAGES:
        raise ValueError(f"stage is one of {sorted(STAGES)}, got {stage!r}")
    args = args if args is not None else XGenMMTrainingArguments()
    if args.remove_unused_columns:
        raise ValueError(
            "remove_unused_columns=True would strip the rows' keys before the xGen-MM collator reads them; "
            "set it to False (XGenMMTrainingArguments does)"
        )
    if not len(train_rows):
        raise ValueError(f"no training rows for the {stage!r} stage")
    if freeze_vision:
        freeze_vision_tower(model)
    if lora:
        model = apply_lora(model, lora if isinstance(lora, LoraConfig) else None)
    collator = XGenMMDataCollator(
        processor, max_length=max_length, on_bad_sample=on_bad_sample, row_kinds=STAGES[stage]
    )
    return Trainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=processor,
        callbacks=callbacks,
    )


def train_stage(
    model: PreTrainedModel,
    processor,
    train_rows: Sequence[dict],
    stage: str,
    args: TrainingArguments | None = None,
    *,
    resume_from_checkpoint: str | bool | None = None,
    **trainer_kwargs,
) -> tuple[Trainer, dict]:
    """Builds the stage's trainer (`build_trainer`, same arguments), trains, and returns the trainer and the training
    metrics (with `skipped_rows`, this process's count of bad rows skipped)."""
    trainer = build_trainer(model, processor, train_rows, stage, args, **trainer_kwargs)
    metrics = dict(trainer.train(resume_from_checkpoint=resume_from_checkpoint).metrics)
    metrics["skipped_rows"] = trainer.data_collator.num_skipped
    return trainer, metrics


def trl_conversation_row(row: dict, image_token: str = "<image>") -> dict:
    """A conversation row (either form) as TRL's vision collator reads it: `messages` with list content and
    `{"type": "image"}` placeholders, and `images`."""
    kind = row_kind(row)
    if kind != "conversation":
        raise ValueError(f"SFT takes conversation rows, got a {kind} row")
    messages, images = conversation_messages(row, image_token)
    return {"messages": messages, "images": images}


def build_trl_sft_trainer(
    model: PreTrainedModel,
    processor,
    train_rows: Sequence[dict],
    args: SFTConfig | None = None,
    *,
    freeze_vision: bool = True,
    lora: bool | LoraConfig = False,
    callbacks: list[TrainerCallback] | None = None,
) -> SFTTrainer:
    """SFT through TRL's `SFTTrainer` (`processing_class=processor`, TRL's `DataCollatorForVisionLanguageModeling`).

    With `assistant_only_loss=True` (the `XGenMMSFTConfig` default) TRL's labels are the chat template's assistant
    spans, as in `XGenMMDataCollator`; TRL forwards every collator key to the model, `image_sizes` included. Rows
    are converted with `trl_conversation_row` (TRL's collator reads only `messages` + `images`). Unlike
    `XGenMMDataCollator`, TRL truncation that would cut an image raises (the processor refuses it).
    """
    args = args if args is not None else XGenMMSFTConfig()
    rows = [trl_conversation_row(row, processor.image_token) for row in train_rows]
    if not rows:
        raise ValueError("no training rows for SFT")
    # SFTTrainer takes a `datasets.Dataset`. The Image feature stores paths as paths and decodes them (and PIL
    # images) when a row is read, so paths and in-memory images mix freely.
    dataset = Dataset.from_list(rows, features=TRL_CONVERSATION_FEATURES)
    if freeze_vision:
        freeze_vision_tower(model)
    peft_config = None
    if lora:
        peft_config = lora if isinstance(lora, LoraConfig) else lora_config(model)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes): equal digests mean equal weights, e.g.
    across the processes of a distributed run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = [
    "STAGES",
    "CollatorArguments",
    "ScriptArguments",
    "XGenMMSFTConfig",
    "XGenMMTrainingArguments",
    "apply_lora",
    "bf16_available",
    "build_trainer",
    "build_trl_sft_trainer",
    "freeze_vision_tower",
    "load_model_and_processor",
    "lora_config",
    "lora_target_modules",
    "train_stage",
    "trl_conversation_row",
    "weights_sha256",
]
