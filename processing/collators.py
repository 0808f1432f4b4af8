# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Data collator for training xGen-MM with `transformers.Trainer` (not a Hub file: training code only).

transformers ships no collator for vision-language training; this one turns rows in the formats of `rows.py`
(conversations, interleaved documents, caption pairs, mixed freely) into model inputs, with the processor doing all
tokenization, image processing and image-token expansion.
"""

from collections.abc import Iterable

import torch
from jinja2.exceptions import TemplateError
from PIL import Image
from transformers.utils import logging

from .rows import (
    ROW_KINDS,
    check_image_files,
    conversation_messages,
    describe_row,
    document_text,
    fill_image_blocks,
    row_kind,
)


logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
# What a malformed row raises inside the processor or the row helpers; anything else is a bug and propagates.
BAD_SAMPLE_ERRORS = (ValueError, TypeError, KeyError, OSError, TemplateError, Image.DecompressionBombError)


class BadSampleError(ValueError):
    """A training row that cannot be turned into model inputs; the message names the row and what was wrong."""


class XGenMMDataCollator:
    r"""
    Collates training rows into a right-padded batch for [`XGenMMForConditionalGeneration`]; use it as
    `Trainer(data_collator=XGenMMDataCollator(processor), args=TrainingArguments(..., remove_unused_columns=False))`.

    Each row is encoded on its own, by its format (see `xgenmm_processing.rows`):

    - conversations go through `processor.apply_chat_template(..., return_assistant_tokens_mask=True)`; the targets
      are the assistant turns as the chat template's `{% generation %}` blocks mark them (the instruct template: each
      answer and its `<|end|>\n`). System and user turns are not targets.
    - interleaved documents and caption pairs (`<image>{caption}<|endofchunk|>`) go through `processor(text, images)`;
      every text token is a target.

    Image tokens and padding are never targets (label -100). Any number of images per row, as PIL images or paths.

    Truncation (`max_length`): a sequence keeps its first `max_length` tokens, except that the cut moves back to the
    start of an image whose tokens would be split; that image and every later one are dropped from the row together
    with their pixels, so every image the model sees is whole. A row left without any target token (e.g. a first
    image that does not fit before the first answer) is a bad row.

    Bad rows (unreadable or missing image, images and markers that differ in number, empty conversation or text, a
    conversation without an assistant turn, no target left after truncation, an unknown format, or a format this
    collator was told not to accept) raise [`BadSampleError`] naming the row (`on_bad_sample="raise"`, the default),
    or are dropped from the batch with a logged warning and counted in `num_skipped` (`on_bad_sample="skip"`). The
    count is per process: with `dataloader_num_workers > 0` it stays in the worker processes. A batch whose rows are
    all bad raises in both modes.

    Args:
        processor ([`XGenMMProcessor`]): tokenizer, image processor and chat template.
        max_length (`int`, *optional*): longest sequence, in tokens; no truncation when `None`.
        on_bad_sample (`str`, *optional*, defaults to `"raise"`): `"raise"` or `"skip"`.
        row_kinds (`Iterable[str]`, *optional*): the formats to accept among `"conversation"`, `"document"` and
            `"caption"` (all by default); other rows are bad rows. The training stages use this to refuse, e.g., a
            caption pair in an SFT run.
        chat_template (`str`, *optional*): template for conversations; the processor's by default.
        pad_to_multiple_of (`int`, *optional*): pad the sequence length to a multiple of this.

    Returns (from `__call__`) a dict of tensors:
        - `input_ids`, `attention_mask`, `labels`: `(batch, seq)`, right-padded.
        - `pixel_values`: `(views, 3, height, width)`, every view of every image of the batch in order (zero views
          for a batch without images).
        - `image_sizes`: `(images, 2)`, the (height, width) of each image.
    """

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        on_bad_sample: str = "raise",
        row_kinds: Iterable[str] | None = None,
        chat_template: str | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample is 'raise' or 'skip', got {on_bad_sample!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length is a positive number of tokens or None, got {max_length!r}")
        row_kinds = tuple(ROW_KINDS if row_kinds is None else row_kinds)
        unknown = set(row_kinds) - set(ROW_KINDS)
        if unknown or not row_kinds:
            raise ValueError(f"row_kinds are among {ROW_KINDS}, got {row_kinds}")
        self.processor = processor
        self.max_length = max_length
        self.on_bad_sample = on_bad_sample
        self.row_kinds = row_kinds
        self.chat_template = chat_template
        self.pad_to_multiple_of = pad_to_multiple_of
        self.num_skipped = 0

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        samples = []
        for position, row in enumerate(rows):
            try:
                samples.append(self.encode(row))
            except BAD_SAMPLE_ERRORS as error:
                message = f"bad training row (position {position} in the batch, {describe_row(row)}): {error}"
                if self.on_bad_sample == "raise":
                    raise BadSampleError(message + " (pass on_bad_sample='skip' to skip such rows)") from error
                self.num_skipped += 1
                logger.warning(f"skipping {message} ({self.num_skipped} skipped so far)")
        if not samples:
            raise BadSampleError(f"all {len(rows)} rows of this batch are bad; see the warnings above")
        return self.pad(samples)

    def encode(self, row: dict) -> dict:
        """One row as unpadded `input_ids` and `labels` `(seq,)`, `pixel_values` `(views, 3, H, W)` and
        `image_sizes` `(images, 2)`, truncated to `max_length`. Raises on a bad row."""
        kind = row_kind(row)
        if kind not in self.row_kinds:
            raise ValueError(f"a {kind} row, but this collator takes {' and '.join(self.row_kinds)} rows")
        processor = self.processor
        if kind == "conversation":
            messages, images = conversation_messages(row, processor.image_token)
            if not any(message["role"] == "assistant" for message in messages):
                raise ValueError("the conversation has no assistant turn to learn from")
            check_image_files(images)
            out = processor.apply_chat_template(
                fill_image_blocks(messages, images),
                chat_template=self.chat_template,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
                return_tensors="pt",
            )
            targets = out["assistant_masks"][0].bool()
        else:
            tokenizer = processor.tokenizer
            text, images = document_text(row, processor.image_token, tokenizer.end_of_chunk_token)
            check_image_files(images)
            out = processor(text=[text], images=[images] if images else None, return_tensors="pt")
            targets = torch.ones_like(out["input_ids"][0], dtype=torch.bool)
        input_ids = out["input_ids"][0]
        labels = input_ids.masked_fill(~targets | (input_ids == processor.image_token_id), IGNORE_INDEX)
        sample = {
            "input_ids": input_ids,
            "labels": labels,
            "pixel_values": out.get("pixel_values"),
            "image_sizes": out.get("image_sizes", torch.zeros(0, 2, dtype=torch.long)),
        }
        if not (labels != IGNORE_INDEX).any():
            raise ValueError("the row has no target token")
        if self.max_length is not None and len(input_ids) > self.max_length:
            sample = self.truncate(sample)
            if not (sample["labels"] != IGNORE_INDEX).any():
                raise ValueError(
                    f"no target token is left after truncation to max_length={self.max_length}: the row has "
                    f"{len(input_ids)} tokens and truncation keeps its first {len(sample['input_ids'])}"
                )
        return sample

    def truncate(self, sample: dict) -> dict:
        """Keeps the first `max_length` tokens, or fewer so that no image is cut; drops the images past the cut."""
        input_ids = sample["input_ids"]
        image_positions = (input_ids == self.processor.image_token_id).nonzero().flatten().tolist()
        cut, kept_images, kept_views, first_token = self.max_length, 0, 0, 0
        for size in sample["image_sizes"].tolist():
            num_tokens = self.processor.num_image_tokens(size)
            start = image_positions[first_token]
            if start + num_tokens > cut:
                cut = min(cut, start)
                break
            kept_images += 1
            kept_views += self.processor.image_processor.get_num_image_views(size)
            first_token += num_tokens
        logger.warning_once(
            f"Truncating rows longer than max_length={self.max_length} tokens; images that would be cut are dropped "
            "with everything after them."
        )
        return {
            "input_ids": input_ids[:cut],
            "labels": sample["labels"][:cut],
            "pixel_values": None if sample["pixel_values"] is None else sample["pixel_values"][:kept_views],
            "image_sizes": sample["image_sizes"][:kept_images],
        }

    def pad(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pads `input_ids` (with the tokenizer's `pad`) and `labels` (with -100); concatenates the images."""
        batch = self.processor.tokenizer.pad(
            {"input_ids": [sample["input_ids"].tolist() for sample in samples]},
            padding=True,
            padding_side="right",
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, sample in enumerate(samples):
            labels[row, : len(sample["labels"])] = sample["labels"]
        pixel_values = [sample["pixel_values"] for sample in samples if sample["pixel_values"] is not None]
        if pixel_values:
            pixel_values = torch.cat(pixel_values)
        else:
            size = self.processor.image_processor.size
            pixel_values = torch.zeros(0, 3, size["height"], size["width"])
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": labels,
            "pixel_values": pixel_values,
            "image_sizes": torch.cat([sample["image_sizes"] for sample in samples]),
        }


__all__ = ["BadSampleError", "XGenMMDataCollator"]
