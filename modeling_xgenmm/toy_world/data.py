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

Everything is a pure function of a seed, so a held-out split is just another seed.
"""

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw


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
SHAPES = ("circle", "square", "triangle", "star")
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
            radius = rng.uniform(0.26, 0.38) * CELL
            margin = CELL / 2 - radius
            center_x = (cell % columns) * CELL + CELL / 2 + rng.uniform(-margin, margin)
            center_y = (cell // columns) * CELL + CELL / 2 + rng.uniform(-margin, margin)
            draw_shape(draw, self.shape, center_x, center_y, radius, COLORS[self.color], rng.uniform(-0.2, 0.2))
        return image


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, radius: float, fill, angle: float) -> None:
    if shape == "circle":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)
        return
    corners = {"square": 4, "triangle": 3, "star": 10}[shape]
    start = {"square": math.pi / 4, "triangle": -math.pi / 2, "star": -math.pi / 2}[shape] + angle
    points = []
    for index in range(corners):
        # A star alternates outer and inner corners; squares and triangles use only outer ones.
        reach = radius * (0.45 if shape == "star" and index % 2 else 1.0)
        theta = start + 2 * math.pi * index / corners
        points.append((x + reach * math.cos(theta), y + reach * math.sin(theta)))
    draw.polygon(points, fill=fill)


def random_scene(rng: random.Random) -> Scene:
    layout = rng.choice(LAYOUTS)
    count = rng.randint(1, min(MAX_COUNT, layout[0] * layout[1]))
    return Scene(rng.choice(SHAPES), rng.choice(list(COLORS)), count, layout, rng.randrange(2**31))


def chat(content: list[dict], answer: str) -> list[dict]:
    return [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def caption_rows(num_rows: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(num_rows):
        scene = random_scene(rng)
        rows.append({"image": scene.render(), "caption": scene.caption()})
    return rows


def document_rows(num_rows: int, seed: int, max_images: int = 3) -> list[dict]:
    """Interleaved documents: 2..max_images captioned images, chunks separated by `<|endofchunk|>`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_rows):
        scenes = [random_scene(rng) for _ in range(rng.randint(2, max_images))]
        text = "".join(f"<image>{scene.caption()}<|endofchunk|>" for scene in scenes)
        rows.append({"text": text, "images": [scene.render() for scene in scenes]})
    return rows


def question_rows(num_rows: int, seed: int) -> list[dict]:
    """Single-image questions, colour / shape / count in turn; each row also says its `kind` and `answer`."""
    rng = random.Random(seed)
    rows = []
    for index in range(num_rows):
        scene = random_scene(rng)
        kind = list(QUESTIONS)[index % len(QUESTIONS)]
        content = [{"type": "image"}, {"type": "text", "text": QUESTIONS[kind]}]
        answer = scene.answer(kind)
        rows.append({"messages": chat(content, answer), "images": [scene.render()], "kind": kind, "answer": answer})
    return rows


def pair_rows(num_rows: int, seed: int) -> list[dict]:
    """Two-image questions with balanced answers (same or different shape / colour; which has more shapes)."""
    rng = random.Random(seed)
    rows = []
    for index in range(num_rows):
        kind = list(PAIR_QUESTIONS)[index % len(PAIR_QUESTIONS)]
        first, second = random_scene(rng), random_scene(rng)
        if kind == "more":
            while second.count == first.count:
                second = random_scene(rng)
            answer = "first" if first.count > second.count else "second"
        else:
            attribute = "shape" if kind == "same_shape" else "color"
            same = rng.random() < 0.5
            value = getattr(first, attribute)
            while (getattr(second, attribute) == value) != same:
                second = random_scene(rng)
            answer = "yes" if same else "no"
        content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": PAIR_QUESTIONS[kind]}]
        rows.append(
            {
                "messages": chat(content, answer),
                "images": [first.render(), second.render()],
                "kind": kind,
                "answer": answer,
            }
        )
    return rows


def hallucination(scene: Scene, kind: str, rng: random.Random) -> str:
    """A wrong answer to a single-image question: an attribute or count that is not in the image."""
    options = {
        "color": [color for color in COLORS if color != scene.color],
        "shape": [shape for shape in SHAPES if shape != scene.shape],
        "count": [NUMBERS[count] for count in range(1, MAX_COUNT + 1) if count != scene.count],
    }[kind]
    return rng.choice(options)


def preference_rows(num_rows: int, seed: int) -> list[dict]:
    """DPO rows in TRL's vision format: chosen = the correct answer, rejected = a hallucinated one."""
    rng = random.Random(seed)
    rows = []
    for index in range(num_rows):
        scene = random_scene(rng)
        kind = list(QUESTIONS)[index % len(QUESTIONS)]
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[kind]}]}]
        rows.append(
            {
                "images": [scene.render()],
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": [{"type": "text", "text": scene.answer(kind)}]}],
                "rejected": [
                    {"role": "assistant", "content": [{"type": "text", "text": hallucination(scene, kind, rng)}]}
                ],
                "kind": kind,
            }
        )
    return rows
