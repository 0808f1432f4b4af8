# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""A synthetic world of coloured shapes, rendered with Pillow, for training an xGen-MM model end to end on a CPU.

Every image shows 1 to `MAX_COUNT` copies of one shape in one colour, each in its own cell of a grid of
`CELL`-pixel cells (2x2, 3x1 or 1x3 cells, so images of three aspect ratios pick different any-resolution grids).
From a scene come the rows of every training stage, in the formats the package's collators read:

- caption pairs `{"image", "caption"}` and interleaved documents `{"text", "images"}` for pretraining;
- single-image questions (colour, shape, count) and two-image questions as `{"messages", "images"}` conversations
  for supervised fine-tuning and evaluation;
- preference rows `{"images", "prompt", "chosen", "rejected"}` whose rejected answer names a colour, shape or count
  that is not in the image (a hallucination), for DPO.

Row `index` of a split is a pure function of the split's seed and `index` (`ToyWorldRows`), so a held-out split is
just another seed: every split of every stage has its own (`SPLITS`, `split_rows`).
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from ..checkpoint.contents import END_OF_CHUNK_TOKEN, IMAGE_TOKEN


CELL = 32
MAX_COUNT = 4
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
NUMBERS = ("zero", "one", "two", "three", "four")
# Cells (columns, rows) of the three image layouts: a square image and two elongated ones.
LAYOUTS = ((2, 2), (3, 1), (1, 3))
BACKGROUND = (235, 235, 235)

QUESTIONS = {
    "color": "What color are the shapes?",
    "shape": "What shape are they?",
    "count": "How many shapes are there?",
}
PAIR_QUESTIONS = {
    "same_shape": "Do both images show the same shape?",
    "same_color": "Are the shapes in both images the same color?",
    "more": "Which image has more shapes, the first or the second?",
}


@dataclass(frozen=True)
class Scene:
    """What an image shows: `count` copies of `shape` in `color`, on a layout of (columns, rows) cells."""

    shape: str
    color: str
    count: int
    layout: tuple[int, int]
    seed: int

    def caption(self) -> str:
        plural = "s" if self.count > 1 else ""
        return f"{NUMBERS[self.count]} {self.color} {self.shape}{plural}."

    def answer(self, question: str) -> str:
        return {"color": self.color, "shape": self.shape, "count": NUMBERS[self.count]}[question]

    def render(self) -> Image.Image:
        columns, rows = self.layout
        image = Image.new("RGB", (columns * CELL, rows * CELL), BACKGROUND)
        draw = ImageDraw.Draw(image)
        rng = random.Random(self.seed)
        for cell in rng.sample(range(columns * rows), self.count):
            radius = rng.uniform(0.3, 0.42) * CELL
            margin = CELL / 2 - radius
            center_x = (cell % columns) * CELL + CELL / 2 + rng.uniform(-margin, margin)
            center_y = (cell // columns) * CELL + CELL / 2 + rng.uniform(-margin, margin)
            draw_shape(draw, self.shape, center_x, center_y, radius, COLORS[self.color], rng.uniform(-0.2, 0.2))
        return image


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, radius: float, fill, angle: float) -> None:
    if shape == "circle":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)
        return
    if shape == "cross":
        # A plus sign: two bars a third of the shape wide. Its silhouette differs from every other shape's even at
        # the few pixels per feature of the toy views (a five-pointed star there reads as a blob).
        arm = radius / 3
        corners = [(arm, radius), (arm, arm), (radius, arm), (radius, -arm), (arm, -arm), (arm, -radius)]
        outline = corners + [(-dx, -dy) for dx, dy in corners]
    else:
        sides = {"square": 4, "triangle": 3}[shape]
        start = {"square": math.pi / 4, "triangle": -math.pi / 2}[shape]
        outline = [
            (radius * math.cos(start + 2 * math.pi * k / sides), radius * math.sin(start + 2 * math.pi * k / sides))
            for k in range(sides)
        ]
    cos, sin = math.cos(angle), math.sin(angle)
    draw.polygon([(x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in outline], fill=fill)


def random_scene(rng: random.Random) -> Scene:
    layout = rng.choice(LAYOUTS)
    count = rng.randint(1, min(MAX_COUNT, layout[0] * layout[1]))
    return Scene(rng.choice(SHAPES), rng.choice(list(COLORS)), count, layout, rng.randrange(2**31))


def chat(content: list[dict], answer: str) -> list[dict]:
    return [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


class ToyWorldRows(Sequence):
    """`size` rows made by `make_row(rng, index)`; row `index` is rendered on access from its own seed, so a dataset
    of any size costs no memory and a held-out split is just another `seed`."""

    def __init__(self, make_row: Callable[[random.Random, int], dict], size: int, seed: int):
        self.make_row, self.size, self.seed = make_row, size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f"row {index} of {self.size}")
        return self.make_row(random.Random(self.seed * 1_000_003 + index), index)


def caption_row(rng: random.Random, index: int) -> dict:
    scene = random_scene(rng)
    return {"image": scene.render(), "caption": scene.caption()}


def document_row(rng: random.Random, index: int, max_images: int = 3) -> dict:
    """An interleaved document: 2..max_images captioned images, chunks separated by `<|endofchunk|>`."""
    scenes = [random_scene(rng) for _ in range(rng.randint(2, max_images))]
    text = "".join(f"{IMAGE_TOKEN}{scene.caption()}{END_OF_CHUNK_TOKEN}" for scene in scenes)
    return {"text": text, "images": [scene.render() for scene in scenes]}


def question_row(rng: random.Random, index: int) -> dict:
    """A single-image question, colour / shape / count in turn; the row also says its `kind` and `answer`."""
    scene = random_scene(rng)
    kind = list(QUESTIONS)[index % len(QUESTIONS)]
    content = [{"type": "image"}, {"type": "text", "text": QUESTIONS[kind]}]
    answer = scene.answer(kind)
    return {"messages": chat(content, answer), "images": [scene.render()], "kind": kind, "answer": answer}


def pair_row(rng: random.Random, index: int) -> dict:
    """A two-image question with balanced answers (same or different shape / colour, said with both attributes;
    which has more shapes)."""
    kind = list(PAIR_QUESTIONS)[index % len(PAIR_QUESTIONS)]
    first, second = random_scene(rng), random_scene(rng)
    if kind == "more":
        while second.count == first.count:
            second = random_scene(rng)
        answer = "first" if first.count > second.count else "second"
    else:
        # The answer names what each image shows before it compares them ("red and blue, no"), as a person would
        # explain it; exact match needs all three parts right.
        attribute = "shape" if kind == "same_shape" else "color"
        same = rng.random() < 0.5
        while (getattr(second, attribute) == getattr(first, attribute)) != same:
            second = random_scene(rng)
        answer = f"{getattr(first, attribute)} and {getattr(second, attribute)}, {'yes' if same else 'no'}"
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": PAIR_QUESTIONS[kind]}]
    return {
        "messages": chat(content, answer),
        "images": [first.render(), second.render()],
        "kind": kind,
        "answer": answer,
    }


def hallucination(scene: Scene, kind: str, rng: random.Random) -> str:
    """A wrong answer to a single-image question: an attribute or count that is not in the image."""
    options = {
        "color": [color for color in COLORS if color != scene.color],
        "shape": [shape for shape in SHAPES if shape != scene.shape],
        "count": [NUMBERS[count] for count in range(1, MAX_COUNT + 1) if count != scene.count],
    }[kind]
    return rng.choice(options)


def preference_row(rng: random.Random, index: int) -> dict:
    """A DPO row in TRL's vision format: chosen = the correct answer, rejected = a hallucinated one."""
    scene = random_scene(rng)
    kind = list(QUESTIONS)[index % len(QUESTIONS)]
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[kind]}]}]
    wrong = hallucination(scene, kind, rng)
    return {
        "images": [scene.render()],
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": scene.answer(kind)}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": wrong}]}],
        "kind": kind,
        "answer": scene.answer(kind),
        "hallucination": wrong,
    }


# Every split of the toy world, its rows and its seed as an offset from the run's seed: the splits of the stages and
# the held-out ones never share a seed, so no row is both trained on and evaluated.
SPLITS = {
    "pretrain_captions": (caption_row, 1),
    "pretrain_documents": (document_row, 2),
    "sft_questions": (question_row, 3),
    "sft_pairs": (pair_row, 4),
    "dpo_preferences": (preference_row, 5),
    "grpo_questions": (question_row, 7),
    "grpo_pairs": (pair_row, 8),
    "held_out_questions": (question_row, 1000),
    "held_out_pairs": (pair_row, 1001),
    "held_out_preferences": (preference_row, 2000),
    "few_shot_questions": (question_row, 3000),
}


def split_rows(split: str, size: int, seed: int) -> ToyWorldRows:
    """`size` rows of `split` (a key of `SPLITS`) for a run with `seed`."""
    make_row, offset = SPLITS[split]
    return ToyWorldRows(make_row, size, seed=seed + offset)
