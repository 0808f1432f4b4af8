# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Preference tuning of xGen-MM with TRL's `DPOTrainer`: the post-training stages of the xGen-MM (BLIP-3) report (DPO
on VLFeedback with LoRA on the language model; safety tuning on VLGuard), which the original release shipped no code
for.

Not a Hub file. The model and processor work with `trl.DPOTrainer` as it is (`processing_class=processor`, TRL's
vision preference rows `{"images", "prompt", "chosen", "rejected"}`). This module adds what TRL leaves to the model:

- `XGenMMDPOConfig`: `DPOConfig` with the package's training policy.
- `XGenMMPreferenceCollator`: TRL's vision preference batch layout, but every completion is tokenized in its prompt's
  context (TRL tokenizes completions on their own, which gives the Phi-3 sentencepiece tokenizer a leading "▁" that
  the model never sees after `<|assistant|>\\n`), and rows are checked (images against placeholders, prompts against
  `max_length`) with errors that name the row instead of truncating into an image.
- `XGenMMDPOTrainer`: a `DPOTrainer` that, while the vision tower and resampler are frozen, encodes each image once
  per step and hands the features to the four forwards (policy and reference, chosen and rejected); same loss and
  gradients, less compute.
- `build_dpo_trainer`: the stage function the examples and recipes call.
"""

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from peft import LoraConfig, PeftModel
from torch import nn
from transformers import PreTrainedModel, TrainerCallback
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import logging
from trl import DPOConfig, DPOTrainer
from trl.data_utils import apply_chat_template, common_prefix_length
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from xgenmm_processing.rows import check_image_files, conversation_messages, describe_row, fill_image_blocks

from .training import _apply_policy, _xgenmm_backbone, freeze_vision_tower, lora_config


logger = logging.get_logger(__name__)

# The report adapts ~2.5% of the language model's weights with LoRA; rank 64 on every linear layer of Phi-3-mini is
# 100.7M weights, 2.6% of its 3.82B.
LORA_RANK = 64
MESSAGES = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
PREFERENCE_FEATURES = Features(
    {
        "id": Value("string"),
        "images": List(ImageFeature()),
        "prompt": MESSAGES,
        "chosen": MESSAGES,
        "rejected": MESSAGES,
    }
)


@dataclass
class XGenMMDPOConfig(DPOConfig):
    """`DPOConfig` with the xGen-MM policy.

    - `bf16`: only where `bf16_available()` (TRL turns it on everywhere); CPU (gloo across processes) where torch sees
      no accelerator.
    - `max_length`: 2048, the released models' truncation length. With `XGenMMPreferenceCollator` (what
      `build_dpo_trainer` and `XGenMMDPOTrainer` use) truncation only ever shortens completions: a prompt that does
      not fit, images included, raises. TRL's own collator cuts every sequence at `max_length`, images or not.
    - `remove_unused_columns`: `False`, so that rows keep their `id` for error messages.
    - `activation_checkpointing`: on (non-reentrant), under its new name.
    - `share_image_features`: encode each image once per step for all four forwards (see `XGenMMDPOTrainer`);
      `None` uses it where it is exact and falls back to TRL's path elsewhere, `True` requires it, `False` never.
    """

    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: where CUDA has bf16."})
    max_length: int | None = field(
        default=2048,
        metadata={"help": "Longest sequence in tokens; truncation shortens completions only, never prompts or images."},
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the rows' other keys (their id)."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Activation checkpointing (non-reentrant)."}
    )
    share_image_features: bool | None = field(
        default=None,
        metadata={
            "help": "Encode each image once per step for policy and reference, chosen and rejected (exact while the "
            "vision tower and resampler are frozen). Default: where exact; True: required; False: TRL's path."
        },
    )

    def __post_init__(self):
        _apply_policy(self)
        super().__post_init__()


def _holds_image(messages: list[dict], image_token: str) -> bool:
    """Whether any message has an image block or an image marker in its text."""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            if isinstance(block, dict) and (
                block.get("type") == "image" or image_token in (block.get("text") or "")
            ):
                return True
    return False


def normalize_preference_row(
    row: dict, image_token: str = "<image>", require_images: bool = True, position: int | None = None
) -> dict:
    """A preference row in the one form the collator and `datasets` features hold: `prompt`, `chosen` and
    `rejected` as messages with list content (text blocks and bare `{"type": "image"}` placeholders) and `images`
    filling the prompt's placeholders in order (`image` is accepted for one image; string content may hold `<image>`
    markers; image blocks may carry their own payload). Keeps `id` when there is one.

    Raises `ValueError` naming the row when keys are missing, images and placeholders differ in number, a completion
    holds an image, or (with `require_images`) the row has no image; `position` (in a batch) names rows without `id`.
    """
    name = describe_preference_row(row, position)
    missing = [key for key in ("prompt", "chosen", "rejected") if key not in row]
    if missing:
        raise ValueError(
            f"preference row {name}: missing {missing}; a row has 'images', 'prompt', 'chosen' and 'rejected'"
        )
    images = row.get("images", row.get("image"))
    images = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
    if require_images and not images:
        raise ValueError(
            f"preference row {name} has no images, but this run expects an image in every row "
            "(pass require_images=False for text-only rows)"
        )
    try:
        completions = {}
        for key in ("chosen", "rejected"):
            messages = _as_messages(row[key], "assistant")
            if _holds_image(messages, image_token):
                raise ValueError(f"the {key} completion holds an image; images belong in the prompt")
            completions[key], _ = conversation_messages({"messages": messages, "images": []})
        prompt, images = conversation_messages({"messages": _as_messages(row["prompt"], "user"), "images": images})
    except ValueError as error:
        raise ValueError(f"preference row {name}: {error}") from None
    normalized = {"images": images, "prompt": prompt, **completions}
    if row.get("id") is not None:
        normalized["id"] = str(row["id"])
    return normalized


def _as_messages(value: Any, role: str) -> list[dict]:
    """TRL's standard (string) form as one message of `role`; conversational values as they are."""
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def describe_preference_row(row: Any, position: int | None = None) -> str:
    """A short name for a row in messages: its `id`, else its position (in the batch or the row list), else its keys."""
    if isinstance(row, dict) and row.get("id") is not None:
        return f"id {row['id']!r}"
    return f"at position {position}" if position is not None else describe_row(row)


def preference_dataset(rows: Sequence[dict] | Dataset, image_token: str = "<image>", require_images: bool = True):
    """The `datasets.Dataset` `DPOTrainer` takes, from any sequence of preference rows (normalized with
    `normalize_preference_row`; images may be PIL images or paths, which the `Image` feature decodes on access).
    A `datasets.Dataset` is returned as it is; the collator checks its rows batch by batch."""
    if isinstance(rows, Dataset):
        return rows
    normalized = []
    for index in range(len(rows)):
        row = normalize_preference_row(rows[index], image_token, require_images, index)
        check_image_files(row["images"])
        normalized.append({"id": str(index), **row})
    if not normalized:
        raise ValueError("no preference rows")
    return Dataset.from_list(normalized, features=PREFERENCE_FEATURES)


@dataclass
class DPOScriptArguments:
    """What the DPO example scripts take besides `XGenMMDPOConfig`."""

    model: str = field(metadata={"help": "Model folder or Hub id (the SFT model), saved with its processor."})
    data: list[str] = field(metadata={"help": "Dataset files (the example's format)."})
    images_dir: str | None = field(default=None, metadata={"help": "Image folder; default: the data file's folder."})
    lora: bool = field(default=True, metadata={"help": "LoRA on the language model (the report); False: full DPO."})
    lora_r: int = field(default=LORA_RANK, metadata={"help": "LoRA rank (64: ~2.6% of Phi-3-mini's weights)."})
    lora_alpha: int = field(default=2 * LORA_RANK, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    freeze_resampler: bool = field(default=True, metadata={"help": "Keep the resampler fixed in full DPO."})

    def lora_config(self, model: PreTrainedModel) -> LoraConfig | bool:
        if not self.lora:
            return False
        return lora_config(model, r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout)


@dataclass
class XGenMMPreferenceCollator(DataCollatorForVisionPreference):
    """TRL's vision preference batch, tokenized the way the model reads it at generation time.

    Output (as `DataCollatorForVisionPreference`): `input_ids`, `attention_mask` and `completion_mask` of shape
    `(2 * batch, seq)`, the chosen sequences first, then the rejected ones, right-padded; `pixel_values` and
    `image_sizes` hold every image twice (once for each half), as TRL's collator does, so that TRL's default path and
    `XGenMMDPOTrainer` read the same batches.

    Differences from TRL's collator, each to keep training and generation consistent:

    - A completion is tokenized in its prompt's context (prompt + completion in one pass; the completion starts where
      the tokens of the prompt alone stop matching, as in TRL's text path). TRL's vision collator tokenizes
      completions alone, and a sentencepiece tokenizer (Phi-3's) then starts them with a word-start "▁" token that
      the model never produces after `<|assistant|>\\n`: DPO would move tokens that generation does not use.
    - Truncation to `max_length` shortens completions only. A prompt (images included) that leaves no room for a
      completion raises, naming the row; TRL cuts every sequence at `max_length`, inside an image if it falls there.
    - Rows are checked first (`normalize_preference_row`): images against placeholders, no images in completions,
      and with `require_images` (the default) an image in every row.

    Args:
        processor ([`XGenMMProcessor`]): tokenizer, image processor and chat template.
        max_length (`int`, *optional*): longest sequence in tokens; `None` for no truncation.
        require_images (`bool`, *optional*, defaults to `True`): refuse rows without images.
    """

    require_images: bool = True

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.pad_to_multiple_of is not None:
            raise NotImplementedError("pad_to_multiple_of is not supported for vision preference batches")
        processor, tokenizer = self.processor, self.processor.tokenizer
        rows, names = [], []
        for position, example in enumerate(examples):
            names.append(describe_preference_row(example, position))
            rows.append(normalize_preference_row(example, processor.image_token, self.require_images, position))
        prompts, completions = [], {"chosen": [], "rejected": []}
        for row in rows:
            text = apply_chat_template(
                {
                    "prompt": fill_image_blocks(row["prompt"], row["images"]),
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                },
                processor,
            )
            prompts.append(text["prompt"])
            for key in completions:
                completions[key].append(text["prompt"] + text[key])
        texts = completions["chosen"] + completions["rejected"]
        images = [row["images"] for row in rows] * 2
        for row_images in images[: len(rows)]:
            check_image_files(row_images)
        batch = processor(
            images=images if any(images) else None,
            text=texts,
            padding=True,
            padding_side="right",
            return_tensors=self.return_tensors,
            add_special_tokens=False,
        )
        completion_mask = torch.zeros_like(batch["input_ids"])
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        for index, (text, length) in enumerate(zip(texts, lengths)):
            row = index % len(rows)
            prompt_ids = tokenizer(prompts[row], add_special_tokens=False)["input_ids"]
            text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            # The tokenizer counts an image as one marker token; `input_ids` hold all of its tokens.
            image_tokens = int((batch["input_ids"][index] == processor.image_token_id).sum())
            markers = prompt_ids.count(processor.image_token_id)
            start = common_prefix_length(prompt_ids, text_ids) + image_tokens - markers
            if start >= length:
                raise ValueError(f"preference row {names[row]}: the completion is empty")
            if self.max_length is not None and start >= self.max_length:
                raise ValueError(
                    f"preference row {names[row]}: the prompt alone is {start} tokens ({image_tokens} of them image "
                    f"tokens) but max_length={self.max_length}, so no completion token would be left; truncation "
                    "never cuts a prompt or an image. Raise max_length or shorten the prompt."
                )
            completion_mask[index, start:length] = 1
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            logger.warning_once(
                f"Truncating completions to fit max_length={self.max_length}; prompts and images are kept whole."
            )
            for key in ("input_ids", "attention_mask"):
                batch[key] = batch[key][:, : self.max_length]
            completion_mask = completion_mask[:, : self.max_length]
        batch["completion_mask"] = completion_mask
        return batch


def _stochastic_parts(module: nn.Module) -> list[str]:
    """Names of the parts of `module` whose output is not a fixed function of its input in training: dropout with a
    non-zero rate, and batch normalisation in training mode (batch statistics, running-stat updates)."""
    found = []
    for name, part in module.named_modules():
        config_dropout = getattr(getattr(part, "config", None), "attention_dropout", 0.0) or 0.0
        float_dropout = getattr(part, "dropout", 0.0)
        if (
            (isinstance(part, nn.Dropout) and part.p > 0)
            or (isinstance(float_dropout, float) and float_dropout > 0)
            or config_dropout > 0
            or (isinstance(part, nn.modules.batchnorm._BatchNorm) and part.training)
        ):
            found.append(name or type(module).__name__)
    return found


def image_feature_sharing_blocker(model: nn.Module, ref_model: nn.Module | None = None) -> str | None:
    """Why the image features of one encoding cannot stand in for those of the four DPO forwards, or `None` when they
    can: the vision tower and the resampler must be frozen (no trainable parameter, adapters included), deterministic
    (no active dropout, no batch normalisation in training mode), and, with a separate reference model, hold the same
    weights as the policy's."""
    backbone = _xgenmm_backbone(model)
    for part in ("vision_tower", "resampler"):
        trainable = [name for name, param in getattr(backbone, part).named_parameters() if param.requires_grad]
        if trainable:
            return f"the {part} trains ({len(trainable)} trainable tensors, e.g. {trainable[0]})"
        stochastic = _stochastic_parts(getattr(backbone, part))
        if stochastic:
            return f"the {part} is not deterministic in training (dropout or batch norm at {stochastic[0]})"
    if ref_model is not None:
        reference = _xgenmm_backbone(ref_model)
        for part in ("vision_tower", "resampler"):
            ours, theirs = getattr(backbone, part).state_dict(), getattr(reference, part).state_dict()
            same = ours.keys() == theirs.keys() and all(
                torch.equal(ours[key], theirs[key].to(ours[key].device)) for key in ours
            )
            if not same:
                return f"the reference model's {part} differs from the policy's"
            if _stochastic_parts(getattr(reference, part)):
                return f"the reference model's {part} is not deterministic"
    return None


class XGenMMDPOTrainer(DPOTrainer):
    """`DPOTrainer` for xGen-MM: `XGenMMPreferenceCollator` by default, and image features shared across the step.

    TRL's vision path repeats every image for the chosen and the rejected sequence and runs the reference model as a
    second forward: each image goes through the vision tower and resampler four times a step. While the tower and
    resampler are frozen (the paper's setting: LoRA adapters on the language model only, where the reference is the
    same model with adapters disabled; or full DPO of the language model with an identical frozen tower and resampler
    in the reference model), those four encodings are the same tensors. This trainer then encodes each image once,
    without autograd, and passes `mm_encoder_outputs` to the policy and reference forwards: the loss and gradients
    are TRL's, the vision cost is a quarter and no vision activations are kept for backward.

    `args.share_image_features` (`XGenMMDPOConfig`): `None` shares where `image_feature_sharing_blocker` finds
    nothing against it and otherwise runs TRL's path (logged once); `True` raises instead; `False` always runs TRL's
    path. The conditions are checked when the trainer is built and at every step (a tower unfrozen later falls back).
    Batches whose two halves do not hold the same images (a custom collator) run TRL's path. DeepSpeed and FSDP, which
    shard the vision weights outside the model's forward, run TRL's path.

    The reference forward itself still runs every step: TRL refuses `precompute_ref_log_probs` for vision data.
    """

    def __init__(self, model, ref_model=None, args=None, data_collator=None, train_dataset=None, **kwargs):
        args = args if args is not None else XGenMMDPOConfig()
        processor = kwargs.get("processing_class")
        if data_collator is None and processor is not None:
            data_collator = XGenMMPreferenceCollator(processor=processor, max_length=args.max_length)
        super().__init__(
            model, ref_model=ref_model, args=args, data_collator=data_collator, train_dataset=train_dataset, **kwargs
        )
        self.share_image_features = getattr(self.args, "share_image_features", None)
        # Why this trainer runs TRL's path for good; the per-step check catches what changes later. Judged in training
        # mode, as the Trainer runs the policy (a frozen vision tower stays in eval mode there), then modes restored.
        policy = self.accelerator.unwrap_model(self.model)
        modes = [(module, module.training) for module in policy.modules()]
        policy.train()
        try:
            self._sharing_refused = self._sharing_blocker(check_reference=True)
        finally:
            for module, training in modes:
                module.training = training
        if self._sharing_refused is not None and self.share_image_features:
            raise ValueError(f"share_image_features=True, but image features cannot be shared: {self._sharing_refused}")
        if self._sharing_refused is not None and self.share_image_features is None:
            logger.info(f"Encoding images in every DPO forward (TRL's path): {self._sharing_refused}")

    def _sharing_blocker(self, check_reference: bool = False) -> str | None:
        if self.share_image_features is False:
            return "share_image_features=False"
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return "DeepSpeed/FSDP shard the vision weights"
        reference = None
        if check_reference and self.ref_model is not None:
            reference = self.accelerator.unwrap_model(self.ref_model)
        return image_feature_sharing_blocker(self.accelerator.unwrap_model(self.model), reference)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._sharing_refused is None and inputs.get("pixel_values") is not None and len(inputs["pixel_values"]):
            blocker = self._sharing_blocker()
            if blocker is None:
                inputs = self._with_shared_image_features(inputs)
            elif self.share_image_features:
                raise ValueError(f"share_image_features=True, but image features cannot be shared: {blocker}")
            else:
                logger.warning_once(f"Encoding images in every DPO forward (TRL's path): {blocker}")
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _with_shared_image_features(self, inputs: dict) -> dict:
        """`inputs` with `pixel_values`/`image_sizes` replaced by the features of the first half's images, used for
        both halves (the collator repeats every image for chosen and rejected)."""
        pixel_values, image_sizes = inputs["pixel_values"], inputs.get("image_sizes")
        backbone = _xgenmm_backbone(self.accelerator.unwrap_model(self.model))
        views = backbone.views_per_image(image_sizes, pixel_values.shape[0])
        half, half_views = len(views) // 2, sum(views[: len(views) // 2])
        repeated = (
            len(views) % 2 == 0
            and torch.equal(pixel_values[:half_views], pixel_values[half_views:])
            and (image_sizes is None or torch.equal(image_sizes[:half], image_sizes[half:]))
        )
        if not repeated:
            logger.warning_once("The batch does not repeat its images for chosen and rejected: using TRL's path")
            return inputs
        with torch.no_grad():
            features = backbone.get_image_features(
                pixel_values[:half_views], None if image_sizes is None else image_sizes[:half]
            ).pooler_output
        shared = {"image": BaseModelOutputWithPooling(pooler_output=tuple(features) * 2)}
        rest = {key: value for key, value in inputs.items() if key not in ("pixel_values", "image_sizes")}
        return {**rest, "mm_encoder_outputs": shared}


def build_dpo_trainer(
    model: PreTrainedModel,
    processor,
    train_rows: Sequence[dict] | Dataset,
    args: DPOConfig | None = None,
    *,
    ref_model: PreTrainedModel | None = None,
    eval_rows: Sequence[dict] | Dataset | None = None,
    lora: bool | LoraConfig = True,
    freeze_vision: bool = True,
    freeze_resampler: bool = True,
    require_images: bool = True,
    callbacks: list[TrainerCallback] | None = None,
) -> XGenMMDPOTrainer:
    """A `XGenMMDPOTrainer` for preference rows, with the policy applied.

    Args:
        model: an `XGenMMForConditionalGeneration` (fp32 master weights), e.g. the SFT model.
        processor: its `XGenMMProcessor`.
        train_rows, eval_rows: preference rows `{"images", "prompt", "chosen", "rejected"}` (see
            `normalize_preference_row`; loaders in `modeling_xgenmm.preference_data`), or a prepared `datasets.Dataset`.
        args: `XGenMMDPOConfig` (default) or any `DPOConfig`.
        ref_model: the reference for full DPO; by default a frozen copy of `model` as it is now. Not allowed with
            LoRA, where the reference is `model` with its adapters disabled (as in the report).
        lora: `True` (default, as in the report) for LoRA of rank `LORA_RANK` on the language model's linear layers
            (`lora_config`), a `LoraConfig`, or `False` for full DPO.
        freeze_vision, freeze_resampler: keep the vision tower / the resampler fixed (both by default: DPO adapts the
            language model's answers, and frozen image features can be shared across the step). With LoRA only
            adapters train anyway.
        require_images: refuse rows without an image.
    """
    args = args if args is not None else XGenMMDPOConfig()
    if lora and ref_model is not None:
        raise ValueError(
            "with LoRA the reference model is the model with its adapters disabled; pass ref_model only for full DPO"
        )
    train_dataset = preference_dataset(train_rows, processor.image_token, require_images)
    eval_dataset = None if eval_rows is None else preference_dataset(eval_rows, processor.image_token, require_images)
    if freeze_vision:
        freeze_vision_tower(model)
    if freeze_resampler:
        _xgenmm_backbone(model).resampler.requires_grad_(False)
    peft_config = None
    if lora:
        peft_config = lora if isinstance(lora, LoraConfig) else lora_config(model, LORA_RANK, 2 * LORA_RANK)
    elif ref_model is None:
        # TRL would reload the reference from `config._name_or_path`, which a model built in memory does not have.
        ref_model = copy.deepcopy(model).requires_grad_(False)
    collator = XGenMMPreferenceCollator(processor=processor, max_length=args.max_length, require_images=require_images)
    return XGenMMDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def save_trained_model(trainer: DPOTrainer, output_dir: str | os.PathLike) -> PreTrainedModel:
    """Saves the trained policy as a full model with its processor and returns it: LoRA adapters are merged into the
    weights, so the folder loads with `from_pretrained` without peft (and with `trust_remote_code=True` where this
    package is not installed)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        model.save_pretrained(output_dir)
        trainer.processing_class.save_pretrained(output_dir)
    return model


@torch.no_grad()
def completion_log_probs(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the chosen and of the rejected completions of a preference batch
    (`XGenMMPreferenceCollator` layout), from the model's logits: `(batch,)` each."""
    inputs = {key: value for key, value in batch.items() if key != "completion_mask"}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    token_log_probs = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    sums = (token_log_probs * batch["completion_mask"][:, 1:]).sum(dim=1)
    return sums.chunk(2)


def preference_accuracy(model: nn.Module, processor, rows: Sequence[dict], batch_size: int = 16) -> float:
    """Fraction of preference rows whose chosen completion the model gives a higher log-probability than the
    rejected one."""
    was_training = model.training
    model.eval()
    collator = XGenMMPreferenceCollator(processor=processor, max_length=None, require_images=False)
    wins = 0
    for start in range(0, len(rows), batch_size):
        batch = collator([rows[index] for index in range(start, min(start + batch_size, len(rows)))])
        chosen, rejected = completion_log_probs(model, batch)
        wins += int((chosen > rejected).sum())
    model.train(was_training)
    return wins / len(rows)


__all__ = [
    "LORA_RANK",
    "DPOScriptArguments",
    "XGenMMDPOConfig",
    "XGenMMDPOTrainer",
    "XGenMMPreferenceCollator",
    "build_dpo_trainer",
    "completion_log_probs",
    "image_feature_sharing_blocker",
    "normalize_preference_row",
    "preference_accuracy",
    "preference_dataset",
    "save_trained_model",
]
