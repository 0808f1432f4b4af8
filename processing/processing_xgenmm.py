# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Processor for xGen-MM (BLIP-3): image processor + tokenizer + chat template.

This file is copied verbatim into every Hub folder, so it imports only numpy, torch and `transformers`.
"""

import dataclasses
import re

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import ImageInput, make_flat_list_of_images
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin, Unpack
from transformers.tokenization_utils_base import PreTokenizedInput, TextInput


CHAT_ROLES = ("system", "user", "assistant")
IMAGE_PAYLOADS = ("image", "url", "path", "base64")


def check_messages(messages, conversation: int | None = None, image_token: str = "<image>") -> None:
    """Raises `ValueError` naming the message and the field when a chat is not a list of `{"role", "content"}`
    messages whose content is a string or a list of text and image blocks: a chat template would otherwise render a
    malformed message as an empty or garbled turn. A chat with image blocks may not also write `image_token` in a text
    (it would mark an image that is not there; text-only chats may, their images given beside them). Read as
    transformers reads a chat: a key whose value is `None` is absent, an OpenAI `image_url` block is an image block,
    message objects (dataclasses, pydantic models) are left to the library."""
    where = "" if conversation is None else f"conversation {conversation}, "
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{where}a chat is a non-empty list of messages, got {messages!r:.80}")
    has_image_blocks = any(
        isinstance(block, dict) and block.get("type") in ("image", "image_url")
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), (list, tuple))
        for block in message["content"]
    )
    for index, message in enumerate(messages):
        name = f"{where}message {index}"
        if dataclasses.is_dataclass(message) or hasattr(message, "model_dump"):
            continue
        if not isinstance(message, dict):
            raise ValueError(f"{name} is a {type(message).__name__}; expected a dict with 'role' and 'content'")
        message = {key: value for key, value in message.items() if value is not None}
        for field in ("role", "content"):
            if field not in message:
                raise ValueError(
                    f"{name} has no {field!r} (its keys: {sorted(message)}); expected 'role' and 'content'"
                )
        role, content = message["role"], message["content"]
        if role not in CHAT_ROLES:
            raise ValueError(f"{name} has role {role!r}; expected one of {list(CHAT_ROLES)}")
        texts = [(name, content)] if isinstance(content, str) else []
        if not isinstance(content, (str, list, tuple)):
            raise ValueError(
                f"{name} ({role}) has content {content!r:.60}; expected a string or a list of text and image blocks"
            )
        for position, block in enumerate(content if not isinstance(content, str) else []):
            block_name = f"{name} ({role}), block {position}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    raise ValueError(f"{block_name} is a text block without a string 'text': {block!r:.80}")
                texts.append((block_name, block["text"]))
            elif kind not in ("image", "image_url"):
                raise ValueError(
                    f"{block_name} is {block!r:.80}; expected {{'type': 'text', 'text': ...}} or "
                    f"{{'type': 'image'}} with one of {list(IMAGE_PAYLOADS)}"
                )
        for text_name, text in texts:
            if has_image_blocks and image_token in text:
                raise ValueError(
                    f"{text_name} writes {image_token} in its text, but the chat gives its images as image blocks: "
                    f"that {image_token} would mark an image that is not there; use an image block for each image"
                )


class XGenMMProcessor(ProcessorMixin):
    r"""
    xGen-MM processor: `processor(images=..., text=...)` and `processor.apply_chat_template(...)`.

    Each `<image>` in the text marks one image, in order (the k-th marker of a sample is its k-th image). Images can be
    anywhere in the text, several per sample, given per sample (`images=[[image_1, image_2], [image_3]]`, counts
    checked per sample) or as one flat list (`images=[image_1, image_2, image_3]`, counted over the batch); a sample
    may have none, and `images=None` processes text alone. The original base-model prompt form, `<image>` followed by
    `<image placeholder>` tokens, counts as one marker.

    Every marker becomes exactly as many `<image>` tokens as the model produces features for that image:
    `views * image_seq_length`, where `views` is 1 + rows * cols of the image's grid in any-resolution mode
    (`image_processor.get_num_image_views`) and 1 in base mode, and `image_seq_length` is the perceiver's latents per
    view. Truncation may cut text but never an image's tokens (that raises).

    Padding is on the left by default (generation); pass `padding_side="right"` for training. Returns `input_ids`,
    `attention_mask`, and with images `pixel_values` `(images, max_views, 3, height, width)` (each image's views,
    then zero views up to `image_processor.get_max_num_image_views()`, so rows of separate calls concatenate) and
    `image_sizes` `(images, 2)` = (height, width).

    Chat templates (see `chat_template.jinja` of each Hub folder): the instruct format is
    `<|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n{assistant}<|end|>\n` with the released
    default system prompt; one image in a message renders as `<image>\n`, each of several as `<image> `. The base
    model's few-shot format is `<image>{prompt}{answer}<|endofchunk|>` per shot, then `<image>{prompt}` for the query.

    Args:
        image_processor ([`XGenMMImageProcessor`] or [`XGenMMImageProcessorPil`]):
            Makes the views of each image.
        tokenizer ([`XGenMMTokenizer`]):
            Phi-3 tokenizer with `<image>`, `<image placeholder>` and `<|endofchunk|>`.
        chat_template (`str`, *optional*):
            Jinja template for `apply_chat_template`.
        image_seq_length (`int`, *optional*, defaults to 128):
            Tokens per view: the perceiver resampler's `num_latents`.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, image_seq_length: int = 128):
        self.image_seq_length = image_seq_length
        self.image_token = getattr(tokenizer, "image_token", None) or "<image>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        image_placeholder_token = getattr(tokenizer, "image_placeholder_token", None) or "<image placeholder>"
        # The original base prompts write `<image>` and n - 1 `<image placeholder>`: one image either way.
        self._image_marker_run = re.compile(f"{re.escape(self.image_token)}(?:{re.escape(image_placeholder_token)})+")
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def prepare_inputs_layout(
        self,
        images: ImageInput | None = None,
        text: TextInput | PreTokenizedInput | list[TextInput] | list[PreTokenizedInput] | None = None,
        videos=None,
        audio=None,
        **kwargs: Unpack[ProcessingKwargs],
    ):
        if text is not None:
            samples = [text] if isinstance(text, str) else text
            if not isinstance(samples, (list, tuple)):
                raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
            for index, sample in enumerate(samples):
                if not isinstance(sample, str):
                    raise TypeError(
                        f"text must be a string or a list of strings, but sample {index} is a {type(sample).__name__}"
                    )
            text = [self._image_marker_run.sub(self.image_token, sample) for sample in samples]
        if images is not None:
            images = self.image_processor.fetch_images(images)
            if not make_flat_list_of_images(images):
                images = None
        return super().prepare_inputs_layout(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs: Unpack[ProcessingKwargs]):
        if images is None and text is None:
            raise ValueError(f"{self.__class__.__name__} needs text, images or both; got neither")
        if text is None:
            return
        # The library's wording (tools match on it), with the count per sample added.
        token, markers = self.image_token, [sample.count(self.image_token) for sample in text]
        if images is None:
            if any(markers):
                raise ValueError(
                    f"Found {sum(markers)} {token} tokens in the text but no images were passed "
                    f"({markers} per sample)."
                )
            return
        num_images = len(make_flat_list_of_images(images))
        if num_images != sum(markers):
            raise ValueError(
                f"The total number of {token} tokens in the prompts should be the same as the number of images "
                f"passed. Found total {sum(markers)} {token} tokens and {num_images} images "
                f"({markers} per sample)."
            )
        if (
            isinstance(images, (list, tuple))
            and images
            and all(isinstance(sample, (list, tuple)) for sample in images)
        ):
            if len(images) != len(text):
                raise ValueError(f"images are given for {len(images)} samples but the text has {len(text)} samples")
            for index, (sample_images, count) in enumerate(zip(images, markers)):
                if len(sample_images) != count:
                    raise ValueError(
                        f"The number of {token} tokens in the prompt should be the same as the number of images "
                        f"passed for it. Found {count} {token} tokens and {len(sample_images)} images in sample "
                        f"{index}."
                    )

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """The library's `apply_chat_template`, every message checked (`check_messages`) before a template renders
        it."""
        if not isinstance(conversation, (list, tuple)) or not conversation:
            raise ValueError(f"a chat is a non-empty list of messages, or a list of chats; got {conversation!r:.80}")
        # A batch as the library tells one: a list of chats, or of chat objects holding `messages`.
        is_batched = isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages")
        for index, messages in enumerate(conversation if is_batched else [conversation]):
            check_messages(getattr(messages, "messages", messages), index if is_batched else None, self.image_token)
        return super().apply_chat_template(conversation, chat_template, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        image_size = image_inputs["image_sizes"][image_idx]
        image_size = image_size.tolist() if isinstance(image_size, (torch.Tensor, np.ndarray)) else image_size
        return self.image_token * self.num_image_tokens(image_size, **kwargs)

    def num_image_tokens(self, image_size: tuple[int, int], **images_kwargs) -> int:
        """`<image>` tokens for an image of (height, width): its views times `image_seq_length`."""
        return self.image_processor.get_num_image_views(image_size, **images_kwargs) * self.image_seq_length

    def _check_special_mm_tokens(self, text: list[str], text_inputs: BatchFeature, modalities: list[str]):
        """Truncation may shorten the text but must keep every image's tokens: the model needs all of them."""
        for index, (sample, ids) in enumerate(zip(text, text_inputs["input_ids"])):
            ids = ids.tolist() if isinstance(ids, (torch.Tensor, np.ndarray)) else list(ids)
            expected, kept = sample.count(self.image_token), ids.count(self.image_token_id)
            if kept != expected:
                raise ValueError(
                    f"sample {index}: truncation keeps {kept} of its {expected} {self.image_token} tokens; truncation "
                    "may only cut text, never an image. Raise max_length or shorten the text."
                )

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        # transformers writes the `trust_remote_code` entry (`auto_map`) by setting it on the processor being saved, so
        # a saved processor would no longer equal the one loaded back from its folder. The files get it; the instance
        # is left as it was.
        had_auto_map, auto_map = "auto_map" in self.__dict__, self.__dict__.get("auto_map")
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if had_auto_map:
                self.auto_map = auto_map
            else:
                self.__dict__.pop("auto_map", None)

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Placeholder tokens per image for the given (height, width) sizes, and `pixel_values` rows per image (one:
        an image's views share its row)."""
        if image_sizes is None:
            return MultiModalData()
        images_kwargs = self._merge_kwargs(self.valid_processor_kwargs, **kwargs)["images_kwargs"]
        views = [self.image_processor.get_num_image_views(size, **images_kwargs) for size in image_sizes]
        return MultiModalData(
            num_image_tokens=[count * self.image_seq_length for count in views], num_image_patches=[1] * len(views)
        )

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs):
        """
        Decodes the answer of each generated sequence: the tokens after the last `<|assistant|>` (the whole sequence
        if there is none, e.g. when only new tokens are passed), up to the first `<|end|>`.

        Args:
            generated_outputs (`torch.Tensor`, `np.ndarray` or lists of ids): `(batch, length)` or `(length,)`.
            skip_special_tokens (`bool`, *optional*, defaults to `True`): passed to the tokenizer's `decode`.

        Returns:
            `list[str]` for a batch, `str` for one sequence.
        """
        if isinstance(generated_outputs, (torch.Tensor, np.ndarray)):
            generated_outputs = generated_outputs.tolist()
        single = len(generated_outputs) == 0 or not isinstance(generated_outputs[0], (list, tuple))
        assistant_id = self.tokenizer.convert_tokens_to_ids("<|assistant|>")
        end_id = self.tokenizer.convert_tokens_to_ids("<|end|>")
        answers = []
        for ids in [generated_outputs] if single else generated_outputs:
            ids = list(ids)
            if assistant_id in ids:
                ids = ids[len(ids) - ids[::-1].index(assistant_id) :]
            if end_id in ids:
                ids = ids[: ids.index(end_id)]
            answers.append(self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs).strip())
        return answers[0] if single else answers


__all__ = ["XGenMMProcessor", "check_messages"]
