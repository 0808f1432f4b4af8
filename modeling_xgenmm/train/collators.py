# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The collators of the training stages; the processor does all tokenization, image processing and image-token
expansion in both, and conversations go through its chat template, whose generation mask marks what is learnt.

- `XGenMMDataCollator` (`transformers.Trainer`: pretraining, SFT): transformers ships no collator for
  vision-language training; this one turns rows in the formats of `rows.py` (conversations, interleaved documents,
  caption pairs, mixed freely) into model inputs with labels.
- `XGenMMPreferenceCollator` (TRL's `DPOTrainer`): TRL's vision preference batch, tokenized as generation sees it.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from jinja2.exceptions import TemplateError
from packaging import version
from PIL import Image
from transformers.utils import logging
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from .rows import (
    ROW_KINDS,
    check_image_files,
    conversation_messages,
    describe_preference_row,
    describe_row,
    document_text,
    fill_image_blocks,
    normalize_preference_row,
    row_kind,
)


logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
# From transformers 5.18 the chat template's assistant masks follow the image tokens the processor inserts; before,
# they land on the wrong tokens of a conversation with images (TRL refuses that case below 5.18 too).
ASSISTANT_MASKS_WITH_IMAGES = version.parse(transformers.__version__) >= version.parse("5.18.0")


def require_assistant_masks_with_images() -> None:
    """Raises where the installed transformers puts the chat template's assistant masks on the wrong tokens of a
    conversation with images (below 5.18), naming the version to install."""
    if not ASSISTANT_MASKS_WITH_IMAGES:
        raise RuntimeError(
            "training on conversations with images takes the chat template's assistant masks, which follow the image "
            f"tokens from transformers 5.18 on; transformers {transformers.__version__} is installed: upgrade it "
            "(pip install 'transformers>=5.18')"
        )


# What a malformed row raises inside the processor or the row helpers; anything else is a bug and propagates.
BAD_SAMPLE_ERRORS = (ValueError, TypeError, KeyError, OSError, TemplateError, Image.DecompressionBombError)


def image_header_size(image) -> tuple[int, int] | None:
    """(height, width) of an image from a PIL image or its file's header (nothing decoded); `None` for a URL or
    base64 data, which are read only when the batch is built. Raises `ValueError` when a file is not an image."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, str) and os.path.isfile(image):
        try:
            with Image.open(image) as opened:
                return opened.height, opened.width
        except (OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"the image file {image!r} is not an image Pillow can read ({error})") from None
    return None


class BadSampleError(ValueError):
    """A training row that cannot be turned into model inputs; the message names the row and what was wrong."""


class XGenMMDataCollator:
    r"""
    Collates training rows into a right-padded batch for [`XGenMMForConditionalGeneration`], or with `padding_free`
    into one packed row; use it as
    `Trainer(data_collator=XGenMMDataCollator(processor), args=TrainingArguments(..., remove_unused_columns=False))`.

    Each row is encoded on its own, by its format (see `modeling_xgenmm.train.rows`):

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
    count is per process: with `dataloader_num_workers > 0` it stays in the worker processes. Under `skip`, a batch
    whose rows are all bad becomes a step without targets (zero loss; counted in `num_empty_batches`). `check(row)`
    finds the same problems without decoding pixels: `build_trainer` runs it on every row before training.

    Padding-free batches (`padding_free=True`, the convention of `transformers.DataCollatorWithFlattening`): the
    batch's rows, each encoded (and truncated to `max_length`) on its own as above, are concatenated into one row
    `(1, total_tokens)` with `position_ids` restarting at 0 at each row's first token and no `attention_mask`. From
    such `position_ids` transformers keeps the rows apart: a block-diagonal causal mask for eager, sdpa and flex
    attention, variable-length kernels for flash attention; the model refuses other attention implementations rather
    than let the rows see each other. Each row's first token gets the label -100, so no row predicts the next one's
    start: the targets, hence the loss, are exactly the padded batch's. The images are those of the padded batch, in
    the same order. `max_length` still caps each row, so a packed row holds up to `batch * max_length` tokens; the
    Trainer's batch size stays a number of rows. With eager or sdpa attention the packed row is attended densely under
    a `(tokens, tokens)` mask, so attention costs grow with the square of the batch's total length: padding-free pays
    most with flash attention (variable-length kernels), and with eager or sdpa when short rows carry much padding.

    Args:
        processor ([`XGenMMProcessor`]): tokenizer, image processor and chat template.
        max_length (`int`, *optional*): longest sequence, in tokens; no truncation when `None`.
        on_bad_sample (`str`, *optional*, defaults to `"raise"`): `"raise"` or `"skip"`.
        row_kinds (`Iterable[str]`, *optional*): the formats to accept among `"conversation"`, `"document"` and
            `"caption"` (all by default); other rows are bad rows. The training stages use this to refuse, e.g., a
            caption pair in an SFT run.
        chat_template (`str`, *optional*): template for conversations; the processor's by default.
        pad_to_multiple_of (`int`, *optional*): pad the sequence length to a multiple of this (padding-free: a
            filler of padding tokens, a sequence of its own without targets, ends the packed row).
        padding_free (`bool`, *optional*, defaults to `False`): pack the batch into one row (see above).

    Returns (from `__call__`) a dict of tensors:
        - `input_ids`, `attention_mask`, `labels`: `(batch, seq)`, right-padded; padding-free: `input_ids`,
          `position_ids`, `labels` of shape `(1, total_tokens)` and no `attention_mask`.
        - `pixel_values`: `(images, max_views, 3, height, width)`, one row per image of the batch in order, zero views
          after each image's own (no row for a batch without images).
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
        padding_free: bool = False,
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
        self.padding_free = padding_free
        self.num_skipped = 0
        self.num_empty_batches = 0
        self._last_sample = None

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
        if samples:
            self._last_sample = samples[-1]
        elif self._last_sample is not None:
            # Every row of the batch is bad (`skip`): train on nothing this step rather than stop a long run. The
            # stand-in keeps every process in step (DDP) and gives a zero loss: none of its labels is a target.
            self.num_empty_batches += 1
            logger.warning(
                f"all {len(rows)} rows of this batch are bad: a step without targets ({self.num_empty_batches} so far)"
            )
            samples = [{**self._last_sample, "labels": torch.full_like(self._last_sample["labels"], IGNORE_INDEX)}]
        else:
            raise BadSampleError(f"all {len(rows)} rows of the first batch are bad; see the warnings above")
        return self.flatten(samples) if self.padding_free else self.pad(samples)

    def check(self, row: dict) -> None:
        """Raises `ValueError` saying what is wrong with `row`, as `encode` would, but reading only the headers of its
        image files: format, turns and answers, image files against markers, and a target left after truncation
        (with image sizes from the headers; images given by URL are not fetched here)."""
        kind = row_kind(row)
        if kind not in self.row_kinds:
            raise ValueError(f"a {kind} row, but this collator takes {' and '.join(self.row_kinds)} rows")
        processor = self.processor
        if kind == "conversation":
            messages, images = conversation_messages(row, processor.image_token)
            answers = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
            if not answers:
                raise ValueError("the conversation has no assistant turn to learn from")
            prompt = processor.apply_chat_template(
                messages[: answers[0]], chat_template=self.chat_template, add_generation_prompt=True
            )
        else:
            text, images = document_text(row, processor.image_token, processor.tokenizer.end_of_chunk_token)
            prompt = text[: text.index(processor.image_token)] if processor.image_token in text else ""
        check_image_files(images)
        sizes = [image_header_size(image) for image in images]
        if self.max_length is None:
            return
        prompt_images = prompt.count(processor.image_token)
        if None in sizes[:prompt_images]:
            return
        length = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]) - prompt_images
        length += sum(processor.num_image_tokens(size) for size in sizes[:prompt_images])
        if length >= self.max_length:
            raise ValueError(
                f"no target token would be left after truncation to max_length={self.max_length}: the text before "
                f"the first target is {length} tokens (images included)"
            )

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
            if images:
                require_assistant_masks_with_images()
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
        cut, kept_images, first_token = self.max_length, 0, 0
        for size in sample["image_sizes"].tolist():
            num_tokens = self.processor.num_image_tokens(size)
            start = image_positions[first_token]
            if start + num_tokens > cut:
                cut = min(cut, start)
                break
            kept_images += 1
            first_token += num_tokens
        logger.warning_once(
            f"Truncating rows longer than max_length={self.max_length} tokens; images that would be cut are dropped "
            "with everything after them."
        )
        return {
            "input_ids": input_ids[:cut],
            "labels": sample["labels"][:cut],
            "pixel_values": None if sample["pixel_values"] is None else sample["pixel_values"][:kept_images],
            "image_sizes": sample["image_sizes"][:kept_images],
        }

    def pad(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pads `input_ids` (with the tokenizer's `pad`) and `labels` (with -100); stacks the images, one row
        each, zero views after each image's own up to the batch's most."""
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
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": labels,
            **self.stack_images(samples),
        }

    def flatten(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """The padding-free batch: the samples one after the other in a single row, `position_ids` restarting at 0
        and the label -100 at each sample's first token; then, with `pad_to_multiple_of`, a filler of padding tokens
        (a sequence of its own, positions from 0, no target). Images as in `pad`."""
        lengths = [len(sample["input_ids"]) for sample in samples]
        input_ids = torch.cat([sample["input_ids"] for sample in samples])
        labels = torch.cat([sample["labels"] for sample in samples])
        labels[torch.tensor(lengths).cumsum(0) - torch.tensor(lengths)] = IGNORE_INDEX
        filler = -sum(lengths) % self.pad_to_multiple_of if self.pad_to_multiple_of else 0
        if filler:
            lengths.append(filler)
            input_ids = torch.cat([input_ids, input_ids.new_full((filler,), self.processor.tokenizer.pad_token_id)])
            labels = torch.cat([labels, labels.new_full((filler,), IGNORE_INDEX)])
        position_ids = torch.cat([torch.arange(length) for length in lengths])
        return {
            "input_ids": input_ids.unsqueeze(0),
            "position_ids": position_ids.unsqueeze(0),
            "labels": labels.unsqueeze(0),
            **self.stack_images(samples),
        }

    def stack_images(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """`pixel_values` `(images, max_views, 3, H, W)`, one row per image of the samples in order, zero views after
        each image's own up to the most; `image_sizes` `(images, 2)`."""
        rows = [sample["pixel_values"] for sample in samples if sample["pixel_values"] is not None]
        size = self.processor.image_processor.size
        max_views = max((row.shape[1] for row in rows), default=1)
        pixel_values = torch.zeros(sum(len(row) for row in rows), max_views, 3, size["height"], size["width"])
        first = 0
        for row in rows:
            pixel_values[first : first + len(row), : row.shape[1]] = row
            first += len(row)
        return {"pixel_values": pixel_values, "image_sizes": torch.cat([sample["image_sizes"] for sample in samples])}


@dataclass
class XGenMMPreferenceCollator(DataCollatorForVisionPreference):
    """TRL's vision preference batch, tokenized the way the model reads it at generation time.

    Output (as `DataCollatorForVisionPreference`): `input_ids`, `attention_mask` and `completion_mask` of shape
    `(2 * batch, seq)`, the chosen sequences first, then the rejected ones, right-padded; `pixel_values` and
    `image_sizes` hold every image twice (once for each half), as TRL's collator does, so that TRL's default path and
    `XGenMMDPOTrainer` read the same batches.

    Differences from TRL's collator, each to keep training and generation consistent:

    - Each sequence is the whole conversation, prompt then completion, through the processor's chat template (as
      `XGenMMDataCollator` encodes SFT conversations), and the completion is where the template's generation mask
      starts after the prompt's own turns, to the end of the sequence: its tokens are those of the prompt's context.
      (Below transformers 5.18, whose masks do not follow the image tokens the processor expands, the masks come from
      the conversation tokenized with its images unexpanded, aligned at the sequence's end:
      `generation_masks_below_5_18`.)
      TRL's vision collator tokenizes completions alone, and a sentencepiece tokenizer (Phi-3's) then starts them with
      a word-start "▁" token that the model never produces after `<|assistant|>\\n`: DPO would move tokens that
      generation does not use.
    - Truncation to `max_length` shortens completions only. A prompt (images included) that leaves no room for a
      completion raises, naming the row; TRL cuts every sequence at `max_length`, inside an image if it falls there.
    - Rows are checked and normalized first (`normalize_preference_row`): images against placeholders, no images in
      completions, and with `require_images` (the default) an image in every row; rows that a `preference_dataset`
      normalized already pass as they are (`normalized_rows`).

    Args:
        processor ([`XGenMMProcessor`]): tokenizer, image processor and chat template.
        max_length (`int`, *optional*): longest sequence in tokens; `None` for no truncation.
        require_images (`bool`, *optional*, defaults to `True`): refuse rows without images.
        normalized_rows (`bool`, *optional*, defaults to `False`): the rows are `normalize_preference_row`'s output
            (`build_dpo_trainer` says so for the datasets it makes), so they are normalized once, not per batch.
    """

    require_images: bool = True
    normalized_rows: bool = False

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.pad_to_multiple_of is not None:
            raise NotImplementedError("pad_to_multiple_of is not supported for vision preference batches")
        names = [describe_preference_row(example, position) for position, example in enumerate(examples)]
        rows = examples
        if not self.normalized_rows:
            image_token = self.processor.image_token
            rows = [
                normalize_preference_row(example, image_token, self.require_images, position)
                for position, example in enumerate(examples)
            ]
        for row in rows:
            check_image_files(row["images"])
        # The chosen sequences, then the rejected ones: each row's prompt and completion as one conversation.
        conversations = [row["prompt"] + row[completion] for completion in ("chosen", "rejected") for row in rows]
        batch = self.processor.apply_chat_template(
            [
                fill_image_blocks(messages, rows[index % len(rows)]["images"])
                for index, messages in enumerate(conversations)
            ],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors=self.return_tensors,
            processor_kwargs={"padding": True, "padding_side": "right"},
        )
        generation_masks = batch.pop("assistant_masks")
        if not ASSISTANT_MASKS_WITH_IMAGES and any(row["images"] for row in rows):
            generation_masks = self.generation_masks_below_5_18(conversations, batch)
        batch["completion_mask"] = self.completion_mask(batch, generation_masks, rows, names)
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            logger.warning_once(
                f"Truncating completions to fit max_length={self.max_length}; prompts and images are kept whole."
            )
            for key in ("input_ids", "attention_mask", "completion_mask"):
                batch[key] = batch[key][:, : self.max_length]
        return batch

    def generation_masks_below_5_18(self, conversations: list[list[dict]], batch: dict) -> torch.Tensor:
        """The chat template's generation masks where transformers < 5.18 leaves them before the image tokens the
        processor expands: those of the conversations tokenized without expanding their images (each image one
        marker), moved to the end of each sequence. Only prompts hold images, so everything after the last one, the
        completion included, is the same tokens in both. (From 5.18 on, the processor's own masks are these.)"""
        text_only = self.processor.tokenizer.apply_chat_template(
            conversations, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        masks = torch.zeros_like(batch["input_ids"])
        for index, (mask, length) in enumerate(zip(text_only["assistant_masks"], batch["attention_mask"].sum(dim=1))):
            masks[index, length - len(mask) : length] = torch.tensor(mask)
        return masks

    def completion_mask(
        self, batch: dict, generation_masks: torch.Tensor, rows: list[dict], names: list[str]
    ) -> torch.Tensor:
        """1 from a sequence's completion to its end: the completion starts at the generation mask's first run after
        those of the prompt's own assistant turns. Raises naming the row when no completion token is left, or none
        would be after truncation to `max_length`."""
        completion_mask = torch.zeros_like(batch["input_ids"])
        for index, length in enumerate(batch["attention_mask"].sum(dim=1).tolist()):
            row = index % len(rows)
            mask = generation_masks[index, :length]
            run_starts = (torch.diff(mask, prepend=mask.new_zeros(1)) == 1).nonzero().flatten().tolist()
            prompt_answers = sum(message["role"] == "assistant" for message in rows[row]["prompt"])
            if len(run_starts) <= prompt_answers:
                raise ValueError(f"preference row {names[row]}: the completion is empty")
            start = run_starts[prompt_answers]
            if self.max_length is not None and start >= self.max_length:
                image_tokens = int((batch["input_ids"][index, :length] == self.processor.image_token_id).sum())
                raise ValueError(
                    f"preference row {names[row]}: the prompt alone is {start} tokens ({image_tokens} of them image "
                    f"tokens) but max_length={self.max_length}, so no completion token would be left; truncation "
                    "never cuts a prompt or an image. Raise max_length or shorten the prompt."
                )
            completion_mask[index, start:length] = 1
        return completion_mask


__all__ = ["BadSampleError", "XGenMMDataCollator", "XGenMMPreferenceCollator"]
