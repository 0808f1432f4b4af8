# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Preference tuning of xGen-MM with TRL's `DPOTrainer`: the post-training stages of the xGen-MM (BLIP-3) report (DPO
on VLFeedback with LoRA on the language model; safety tuning on VLGuard), which the original release shipped no code
for.

The model and processor work with `trl.DPOTrainer` as it is (`processing_class=processor`, TRL's vision preference
rows `{"images", "prompt", "chosen", "rejected"}`). This module adds what TRL leaves to the model:

- `XGenMMDPOConfig` (in `arguments`): `DPOConfig` with the package's training policy.
- `XGenMMDPOTrainer`: a `DPOTrainer` that collates with `XGenMMPreferenceCollator` and, while the vision tower and
  resampler are frozen, encodes each image once per step and hands the features to the four forwards (policy and
  reference, chosen and rejected); same loss and gradients, less compute.
- `build_dpo_trainer`: the stage function the examples and recipes call.
"""

import copy
from collections.abc import Sequence

import torch
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from peft import LoraConfig
from torch import nn
from transformers import PreTrainedModel, TrainerCallback
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import logging
from trl import DPOConfig, DPOTrainer

from ..checkpoint.contents import IMAGE_TOKEN
from .arguments import XGenMMDPOConfig
from .collators import XGenMMPreferenceCollator
from .freezing import freeze_resampler, freeze_vision_tower, xgenmm_backbone
from .rows import check_image_files, normalize_preference_row


logger = logging.get_logger(__name__)

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


def preference_dataset(rows: Sequence[dict] | Dataset, image_token: str = IMAGE_TOKEN, require_images: bool = True):
    """The `datasets.Dataset` `DPOTrainer` takes, from any sequence of preference rows, each normalized once here
    (`normalize_preference_row`, which names a bad row before training starts; images may be PIL images or paths,
    which the `Image` feature decodes on access). A `datasets.Dataset` is returned as it is; the collator normalizes
    its rows batch by batch."""
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
    backbone = xgenmm_backbone(model)
    for part in ("vision_tower", "resampler"):
        trainable = [name for name, param in getattr(backbone, part).named_parameters() if param.requires_grad]
        if trainable:
            return f"the {part} trains ({len(trainable)} trainable tensors, e.g. {trainable[0]})"
        stochastic = _stochastic_parts(getattr(backbone, part))
        if stochastic:
            return f"the {part} is not deterministic in training (dropout or batch norm at {stochastic[0]})"
    if ref_model is not None:
        reference = xgenmm_backbone(ref_model)
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
            raise ValueError(
                f"share_image_features=True, but image features cannot be shared: {self._sharing_refused}"
            )
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
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def _with_shared_image_features(self, inputs: dict) -> dict:
        """`inputs` with `pixel_values`/`image_sizes` replaced by the features of the first half's images, used for
        both halves (the collator repeats every image for chosen and rejected)."""
        pixel_values, image_sizes = inputs["pixel_values"], inputs.get("image_sizes")
        backbone = xgenmm_backbone(self.accelerator.unwrap_model(self.model))
        views = backbone.views_per_image(image_sizes, pixel_values)
        # Rows of pixel_values: one per image (the processor's layout), or one per view (flattened).
        half = len(views) // 2
        half_views = half if pixel_values.dim() == 5 else sum(views[:half])
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
    peft_config: LoraConfig | None = None,
    freeze_vision: bool = True,
    require_images: bool = True,
    callbacks: list[TrainerCallback] | None = None,
) -> XGenMMDPOTrainer:
    """A `XGenMMDPOTrainer` for preference rows, with the policy applied.

    Args:
        model: an `XGenMMForConditionalGeneration` (fp32 master weights), e.g. the SFT model.
        processor: its `XGenMMProcessor`.
        train_rows, eval_rows: preference rows `{"images", "prompt", "chosen", "rejected"}` (see
            `normalize_preference_row`; loaders in `modeling_xgenmm.train.preference_data`), or a prepared
            `datasets.Dataset`.
        args: `XGenMMDPOConfig` (default) or any `DPOConfig`; `XGenMMDPOConfig.freeze_resampler` (on by default)
            keeps the resampler fixed.
        ref_model: the reference for full DPO; by default a frozen copy of `model` as it is now. Not allowed with
            LoRA, where the reference is `model` with its adapters disabled (as in the report).
        peft_config: LoRA adapters to train (`lora_config(model)`: the report's DPO), or `None` for full DPO.
        freeze_vision: keep the vision tower fixed (the released recipe).
        require_images: refuse rows without an image.
    """
    args = args if args is not None else XGenMMDPOConfig()
    if peft_config is not None and ref_model is not None:
        raise ValueError(
            "with LoRA the reference model is the model with its adapters disabled; pass ref_model only for full DPO"
        )
    train_dataset = preference_dataset(train_rows, processor.image_token, require_images)
    eval_dataset = None if eval_rows is None else preference_dataset(eval_rows, processor.image_token, require_images)
    if freeze_vision:
        freeze_vision_tower(model)
    if getattr(args, "freeze_resampler", True):
        freeze_resampler(model)
    if peft_config is None and ref_model is None:
        # TRL would reload the reference from `config._name_or_path`, which a model built in memory does not have.
        ref_model = copy.deepcopy(model).requires_grad_(False)
    # Rows given as lists are normalized into the datasets above; a given `datasets.Dataset`, by the collator.
    normalized = not any(isinstance(rows, Dataset) for rows in (train_rows, eval_rows))
    collator = XGenMMPreferenceCollator(
        processor, max_length=args.max_length, require_images=require_images, normalized_rows=normalized
    )
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
    "XGenMMDPOTrainer",
    "build_dpo_trainer",
    "completion_log_probs",
    "image_feature_sharing_blocker",
    "preference_accuracy",
    "preference_dataset",
]
