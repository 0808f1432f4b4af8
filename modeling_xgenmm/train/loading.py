# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The training policy of the xGen-MM (BLIP-3) report, decided once for every stage:

- the vision tower stays frozen (and in eval mode) while the perceiver resampler and the language model train;
- LoRA, when asked for, adapts the language model's linear layers only (`lora_target_modules`), with one set of
  defaults (`LORA_DEFAULTS`: rank 64, the report's ~2.5% of the language model);
- fp32 master weights, bf16 mixed precision where CUDA has bf16, fp32 elsewhere; activation checkpointing on;
  without any accelerator every process trains on the CPU (gloo across processes);
- QLoRA (`--load_in_4bit --use_peft`) quantizes the language model's linear layers only (bitsandbytes); the vision
  tower, the resampler and `lm_head` stay in full precision (`QUANTIZATION_SKIP_MODULES`).
"""

import copy
import dataclasses
import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    BitsAndBytesConfig,
    PreTrainedModel,
    TrainingArguments,
)
from transformers.utils import logging
from trl import ModelConfig, get_quantization_config

from ..checkpoint.folders import has_weight_files


logger = logging.get_logger(__name__)

# Rank 64 on every linear layer of Phi-3-mini is 100.7M weights, 2.6% of its 3.82B: the report's "~2.5%".
LORA_DEFAULTS = {"r": 64, "lora_alpha": 128, "lora_dropout": 0.05}
# What bitsandbytes leaves in full precision: everything outside the language model. transformers matches these as
# module-name prefixes from the model's root (`should_convert_module`); given explicitly, they replace its default
# skips, so `lm_head` is listed too.
QUANTIZATION_SKIP_MODULES = ["model.vision_tower", "model.resampler", "lm_head"]


# Whether the installed Trainer reads `activation_checkpointing` (5.23 on) or only `gradient_checkpointing`.
TRAINER_READS_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {
    field.name for field in dataclasses.fields(TrainingArguments)
}


def bf16_available() -> bool:
    """Whether bf16 mixed precision is the policy here: CUDA with bf16 support. CPUs train in fp32."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class PolicyFields:
    """The fields in which `XGenMMTrainingArguments`, `XGenMMSFTConfig` and `XGenMMDPOConfig` carry the policy
    (listed first among their bases, so these defaults win).

    - `bf16`: `None` (the default) means bf16 where `bf16_available()`, fp32 otherwise (TRL turns it on everywhere).
    - `activation_checkpointing`: on (non-reentrant): about 20% more compute for much less activation memory, which
      the 4B released models need on common GPUs. `gradient_checkpointing` is its deprecated alias.
    - `max_length`: 2048 tokens, the released models' truncation length; truncation never cuts an image.
    - `use_cpu`: forced on where torch sees no accelerator, so that a multi-process launch (`accelerate launch
      --multi_gpu --num_processes N`, `torchrun`) trains data-parallel on CPUs with gloo instead of starting N
      independent runs.
    - `start_over`: runs resume from the last complete checkpoint in `output_dir` (`train.resume`); `True` starts at
      step 0 instead, after moving the earlier `checkpoint-*` folders into `output_dir/previous-run-<timestamp>/`.
    """

    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: where CUDA has bf16."})
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Activation checkpointing (non-reentrant)."}
    )
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    max_length: int | None = field(
        default=2048, metadata={"help": "Longest sequence in tokens; truncation never cuts an image."}
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
        if not TRAINER_READS_ACTIVATION_CHECKPOINTING and self.gradient_checkpointing is None:
            # the Trainer of transformers < 5.23 only reads the older name
            self.gradient_checkpointing = self.activation_checkpointing
        super().__post_init__()


@dataclass
class XGenMMModelConfig(ModelConfig):
    """TRL's `ModelConfig` with the package's LoRA defaults (`LORA_DEFAULTS`; without `--lora_target_modules`, the
    language model's linear layers) and the vision tower frozen, as in the report."""

    lora_r: int = field(default=LORA_DEFAULTS["r"], metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=LORA_DEFAULTS["lora_alpha"], metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=LORA_DEFAULTS["lora_dropout"], metadata={"help": "LoRA dropout."})
    freeze_vision: bool = field(default=True, metadata={"help": "Freeze the vision tower (the released recipe)."})


def xgenmm_backbone(model: nn.Module) -> nn.Module:
    """The `XGenMMModel` inside an `XGenMMForConditionalGeneration`, a PEFT wrapper, or itself."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    backbone = getattr(model, "model", model)
    if not all(hasattr(backbone, name) for name in ("vision_tower", "resampler", "language_model")):
        raise TypeError(f"expected an xGen-MM model (vision_tower, resampler, language_model), got {type(model)}")
    return backbone


def freeze_vision_tower(model: nn.Module) -> None:
    """Stops gradients to the vision tower (the released models never train it); resampler and LM stay trainable.
    `XGenMMModel.train()` then keeps the frozen tower in eval mode."""
    xgenmm_backbone(model).vision_tower.requires_grad_(False)


def freeze_resampler(model: nn.Module) -> None:
    """Stops gradients to the perceiver resampler (DPO keeps it fixed: it adapts the language model's answers)."""
    xgenmm_backbone(model).resampler.requires_grad_(False)


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


def load_model_and_processor(
    name_or_path: str | Path,
    seed: int = 0,
    trust_remote_code: bool = False,
    quantization_config: BitsAndBytesConfig | None = None,
):
    """The model and processor of a Hub id or folder, in fp32 (the master weights of mixed-precision training).

    A local folder with a `config.json` but no weights (e.g. `hub_configs/tiny-random`) gives a model initialised
    at random with `seed`, identical on every process.

    With `quantization_config` (`quantization_config_from_args`), the model is quantized by bitsandbytes and frozen
    for QLoRA (`load_quantized_model`); a folder without weights is initialised at random first, saved to a
    temporary folder and loaded from there quantized.
    """
    path = Path(name_or_path)
    if not path.exists() and (str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1):
        raise FileNotFoundError(
            f"{name_or_path} does not exist: expected a model folder or a Hub repo id (name/model)"
        )
    processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if path.is_dir() and not has_weight_files(path):
        logger.warning(f"{path} holds no weights: initialising the model at random (seed {seed})")
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code).float()
        if quantization_config is None:
            return model, processor
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            return load_quantized_model(folder, quantization_config, trust_remote_code), processor
    if quantization_config is not None:
        return load_quantized_model(name_or_path, quantization_config, trust_remote_code), processor
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    return model, processor


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
    "LORA_DEFAULTS",
    "QUANTIZATION_SKIP_MODULES",
    "PolicyFields",
    "XGenMMModelConfig",
    "bf16_available",
    "freeze_resampler",
    "freeze_vision_tower",
    "load_model_and_processor",
    "load_quantized_model",
    "lora_config",
    "lora_target_modules",
    "peft_config_from_args",
    "quantization_config_from_args",
    "refuse_quantization",
    "weights_sha256",
    "xgenmm_backbone",
]
