# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The base model's few-shot in-context protocol of the report (0, 4 or 8 shots): per shot, each image as `<image>`
followed by `image_seq_length - 1` x `<image placeholder>`, then the text, the answer and `<|endofchunk|>`; the query
the same without answer and end of chunk. Shots are drawn from a training split with a fixed seed."""

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..checkpoint.contents import END_OF_CHUNK_TOKEN, IMAGE_PLACEHOLDER_TOKEN, IMAGE_TOKEN


@dataclass
class Shot:
    """One in-context example: its images (or just how many), its text and its answer (with any separator the task
    puts before the answer, e.g. a space)."""

    images: Sequence
    text: str
    answer: str


def image_markers(num_images: int, image_seq_length: int) -> str:
    """What the released base prompts write for each image: `<image>` and `image_seq_length - 1` placeholders."""
    if image_seq_length < 1:
        raise ValueError(f"image_seq_length is the number of tokens of one image, at least 1; got {image_seq_length}")
    return (IMAGE_TOKEN + IMAGE_PLACEHOLDER_TOKEN * (image_seq_length - 1)) * num_images


def few_shot_prompt(shots: Sequence[Shot], num_query_images: int, query_text: str, image_seq_length: int) -> str:
    """The base model's prompt: every shot with its answer and `<|endofchunk|>`, then the query's images and text."""
    chunks = [
        image_markers(len(shot.images), image_seq_length) + shot.text + shot.answer + END_OF_CHUNK_TOKEN
        for shot in shots
    ]
    return "".join(chunks) + image_markers(num_query_images, image_seq_length) + query_text


def draw_shots(pool_size: int, num_shots: int, seed: int, exclude: int | None = None) -> list[int]:
    """Indices of `num_shots` distinct examples of a pool of `pool_size`, the same for the same (seed, exclude): one
    `random.Random(seed)` per query, so that results do not depend on the order queries are evaluated in."""
    if num_shots < 0:
        raise ValueError(f"num_shots is 0 or more, got {num_shots}")
    candidates = [index for index in range(pool_size) if index != exclude]
    if num_shots > len(candidates):
        raise ValueError(
            f"{num_shots} shots were asked for but the training split has only {len(candidates)} examples"
        )
    return random.Random(seed).sample(candidates, num_shots)


__all__ = ["Shot", "draw_shots", "few_shot_prompt", "image_markers"]
