# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""What stays fixed in training: the vision tower (every stage of the released recipe), and in DPO the perceiver
resampler as well."""

from peft import PeftModel
from torch import nn


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


__all__ = ["freeze_resampler", "freeze_vision_tower", "xgenmm_backbone"]
