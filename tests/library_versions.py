"""What the installed transformers can do, for the tests of behaviour that only part of the supported range has (the
package supports transformers 5.16.1 to the newest 5.x; `.ci/run` runs the core tests on the lowest)."""

import pytest

from modeling_xgenmm.train.collators import ASSISTANT_MASKS_WITH_IMAGES


needs_assistant_masks_with_images = pytest.mark.skipif(
    not ASSISTANT_MASKS_WITH_IMAGES,
    reason="the chat template's assistant masks follow the image tokens from transformers 5.18 on",
)


def enable_activation_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing under the installed transformers' name for it."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def activation_checkpointing_on(model) -> bool:
    """Whether activation checkpointing is on, under the installed transformers' name for it."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return model.is_activation_checkpointing
    return model.is_gradient_checkpointing
