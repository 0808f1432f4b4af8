# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Padding-free batches (`XGenMMDataCollator(padding_free=True)`, `XGenMMTrainingArguments(padding_free=True)`): the
packed row's structure, the model's logits, loss and gradients on it against the padded batch (eager and sdpa), the
refusal of attention that cannot keep packed rows apart, and a `Trainer` run."""

import math

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from modeling_helpers import tiny_model
from modeling_xgenmm.train import build_trainer, load_model_and_processor
from modeling_xgenmm.train.collators import IGNORE_INDEX, XGenMMDataCollator
from paths import TINY_RANDOM
from processing_helpers import synthetic_image, tiny_processor
from training_helpers import IMAGE_SIZES_WH, LossRecorder, multi_image_rows, pretraining_rows, sft_rows, tiny_args


ROWS = {
    "conversations": lambda images: sft_rows(images, 3) + multi_image_rows(images, 2),
    "documents": lambda images: pretraining_rows(images, 4),
}


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def images():
    return [synthetic_image("RGB", width, height, seed=index) for index, (width, height) in enumerate(IMAGE_SIZES_WH)]


def both_batches(processor, rows, **settings) -> tuple[dict, dict]:
    """The padded batch and the padding-free batch of `rows`."""
    padded = XGenMMDataCollator(processor, **settings)(rows)
    return padded, XGenMMDataCollator(processor, padding_free=True, **settings)(rows)


def row_starts(padded: dict) -> list[int]:
    """Where each padded row starts in the packed row."""
    lengths = padded["attention_mask"].sum(dim=1)
    return (lengths.cumsum(0) - lengths).tolist()


# --- the packed batch ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ROWS))
def test_packed_batch_is_the_padded_rows_end_to_end_with_restarting_positions(processor, images, kind):
    padded, packed = both_batches(processor, ROWS[kind](images))
    real = padded["attention_mask"].bool()
    lengths = real.sum(dim=1).tolist()
    assert "attention_mask" not in packed
    assert list(packed) == ["input_ids", "position_ids", "labels", "pixel_values", "image_sizes"]
    assert packed["input_ids"].shape == packed["labels"].shape == packed["position_ids"].shape == (1, sum(lengths))
    assert torch.equal(packed["input_ids"][0], padded["input_ids"][real])
    assert torch.equal(packed["position_ids"][0], torch.cat([torch.arange(length) for length in lengths]))
    starts = row_starts(padded)
    assert (packed["position_ids"][0] == 0).nonzero().flatten().tolist() == starts
    # The labels are the padded rows', except -100 at each row's first token (which no padded row predicts either).
    expected = padded["labels"][real]
    assert (packed["labels"][0, starts] == IGNORE_INDEX).all()
    keep = torch.ones(sum(lengths), dtype=torch.bool)
    keep[starts] = False
    assert torch.equal(packed["labels"][0, keep], expected[keep])
    assert torch.equal(packed["pixel_values"], padded["pixel_values"])
    assert torch.equal(packed["image_sizes"], padded["image_sizes"])
    assert len(packed["image_sizes"]) > len(lengths)  # several images per row somewhere


def test_padding_free_with_max_length_truncates_each_row_as_the_padded_batch_does(processor, images):
    rows = ROWS["documents"](images)
    padded, packed = both_batches(processor, rows, max_length=40)
    assert padded["input_ids"].shape[1] <= 40
    assert torch.equal(packed["input_ids"][0], padded["input_ids"][padded["attention_mask"].bool()])
    assert torch.equal(packed["image_sizes"], padded["image_sizes"])
    assert len(packed["image_sizes"]) < len(XGenMMDataCollator(processor, padding_free=True)(rows)["image_sizes"])


def test_pad_to_multiple_of_ends_the_packed_row_with_a_filler_sequence_without_targets(processor, images):
    rows = ROWS["conversations"](images)
    unpadded = XGenMMDataCollator(processor, padding_free=True)(rows)
    packed = XGenMMDataCollator(processor, padding_free=True, pad_to_multiple_of=64)(rows)
    total, length = unpadded["input_ids"].shape[1], packed["input_ids"].shape[1]
    assert length % 64 == 0 and 0 < length - total < 64
    assert torch.equal(packed["input_ids"][0, :total], unpadded["input_ids"][0])
    assert (packed["input_ids"][0, total:] == processor.tokenizer.pad_token_id).all()
    assert (packed["labels"][0, total:] == IGNORE_INDEX).all()
    assert torch.equal(packed["position_ids"][0, total:], torch.arange(length - total))


# --- the model on packed rows -------------------------------------------------------------------------------------


def unpacked_rows(padded: dict, tensor: torch.Tensor) -> torch.Tensor:
    """The padded batch's per-token `tensor` `(batch, seq, ...)` at its real tokens, rows end to end."""
    return tensor[padded["attention_mask"].bool()]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", list(ROWS))
def test_logits_of_the_packed_row_are_each_rows_own(processor, images, kind, attention):
    padded, packed = both_batches(processor, ROWS[kind](images))
    model = tiny_model(attn_implementation=attention)
    assert model.config.text_config.use_cache  # the language model would build a cache unless told not to
    with torch.no_grad():
        expected = unpacked_rows(padded, model(**padded).logits)
        logits = model(**packed).logits[0]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def loss_and_gradients(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss (labelled positions only, `num_items_in_batch` as the Trainer passes it) and every
    gradient."""
    model.zero_grad(set_to_none=True)
    num_items = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    loss = model(**batch, num_items_in_batch=torch.tensor(num_items)).loss
    loss.backward()
    gradients = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return loss.detach(), gradients


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", list(ROWS))
def test_packed_loss_and_gradients_equal_the_padded_batchs(processor, images, kind, attention):
    padded, packed = both_batches(processor, ROWS[kind](images))
    model = tiny_model(attn_implementation=attention).train()
    loss, gradients = loss_and_gradients(model, padded)
    packed_loss, packed_gradients = loss_and_gradients(model, packed)
    assert torch.isfinite(loss) and loss > 0
    torch.testing.assert_close(packed_loss, loss, rtol=1e-5, atol=0)
    assert packed_gradients.keys() == gradients.keys()
    assert any(name.startswith("model.vision_tower.") for name in gradients)  # the images' gradients too
    for name, gradient in gradients.items():
        # 1e-10 absolute: the key biases' gradients are zero in exact arithmetic (softmax ignores them), float noise.
        atol = 1e-5 * float(gradient.abs().max()) + 1e-10
        torch.testing.assert_close(packed_gradients[name], gradient, rtol=1e-5, atol=atol, msg=name)


def test_attention_that_cannot_keep_packed_rows_apart_is_refused(processor, images):
    AttentionInterface.register("unmasked_sdpa_for_tests", sdpa_attention_forward)
    padded, packed = both_batches(processor, ROWS["conversations"](images))
    model = tiny_model(attn_implementation="sdpa")
    model.model.language_model.config._attn_implementation = "unmasked_sdpa_for_tests"
    with torch.no_grad():
        model(**padded)  # padded batches still work: their attention_mask says it all
        with pytest.raises(ValueError, match="cannot keep packed rows apart"):
            model(**packed)


# --- training -----------------------------------------------------------------------------------------------------


def record_batch_shape(shapes: list):
    """A forward pre-hook appending each batch's `input_ids` shape and whether it has an `attention_mask`."""

    def hook(module, args, kwargs):
        shapes.append((tuple(kwargs["input_ids"].shape), "attention_mask" in kwargs))

    return hook


def test_trainer_with_padding_free_batches_trains_as_with_padded_ones(image_paths, tmp_path):
    runs = {}
    for name, settings in {
        "padded": {},
        "packed": {"padding_free": True},
        "packed, checkpointing": {"padding_free": True, "activation_checkpointing": True},
    }.items():
        model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
        recorder, shapes = LossRecorder(), []
        model.register_forward_pre_hook(record_batch_shape(shapes), with_kwargs=True)
        arguments = tiny_args(tmp_path / name, **{"max_steps": 3, "activation_checkpointing": False, **settings})
        rows = sft_rows(image_paths, 6) + multi_image_rows(image_paths, 6)
        build_trainer(model, processor, rows, "sft", arguments, callbacks=[recorder]).train()
        assert recorder.losses.keys() == {1, 2, 3}
        assert all(math.isfinite(loss) for loss in recorder.losses.values())
        packing = settings.get("padding_free", False)
        assert all((shape[0] == 1) == packing and has_mask != packing for shape, has_mask in shapes), shapes
        runs[name] = recorder.losses
    for name in ("packed", "packed, checkpointing"):
        for step, loss in runs["padded"].items():
            assert runs[name][step] == pytest.approx(loss, rel=1e-5), (name, step)
