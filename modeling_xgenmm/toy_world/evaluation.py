# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Held-out evaluation of a toy-world model: greedy answers, exact-match accuracy per question kind, and the rates of
wrong and hallucinated answers (an attribute the image does not show)."""

from collections import defaultdict
from collections.abc import Sequence

import torch

from ..train.rows import fill_image_blocks
from .data import COLORS, MAX_COUNT, NUMBERS, PAIR_QUESTIONS, QUESTIONS, SHAPES


ANSWER_WORDS = {"color": set(COLORS), "shape": set(SHAPES), "count": set(NUMBERS[1 : MAX_COUNT + 1])}


def format_accuracy_table(accuracy: dict[str, float]) -> str:
    """The held-out accuracy per question kind, then the single- and two-image means against their targets."""
    lines = ["Held-out exact-match accuracy", "", f"{'question':<56}{'accuracy':>9}"]
    for kind, question in {**QUESTIONS, **PAIR_QUESTIONS}.items():
        lines.append(f"{question:<56}{accuracy[kind]:>9.1%}")
    lines.append("")
    for name, target in (("single_image", 0.9), ("two_image", 0.8)):
        verdict = "meets" if accuracy[name] >= target else "BELOW"
        label = name.replace("_", "-") + " questions"
        lines.append(f"{label:<56}{accuracy[name]:>9.1%}  ({verdict} the {target:.0%} target)")
    return "\n".join(lines)


def normalised_answer(text: str) -> str:
    """How an answer is compared with the expected one: stripped, without a final full stop, lower case."""
    return text.strip().rstrip(".").lower()


@torch.no_grad()
def greedy_answers(
    model, processor, rows: Sequence[dict], batch_size: int = 32, temperature: float | None = None
) -> list[str]:
    """Greedy answers to the question rows (their last turn, the answer, left out), normalised: stripped, without a
    final full stop, lower case. With `temperature`, one sampled answer per question instead (seed it first)."""
    model.eval()
    answers = []
    for start in range(0, len(rows), batch_size):
        batch = [rows[index] for index in range(start, min(start + batch_size, len(rows)))]
        inputs = processor.apply_chat_template(
            [fill_image_blocks(row["messages"][:-1], row["images"]) for row in batch],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True, "padding_side": "left"},
        )
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature else {"do_sample": False}
        generated = model.generate(**inputs, max_new_tokens=12, **sampling)
        decoded = processor.post_process_image_text_to_text(generated[:, inputs["input_ids"].shape[1] :])
        answers.extend(normalised_answer(answer) for answer in decoded)
    return answers


def answer_accuracy(
    model, processor, rows: Sequence[dict], batch_size: int = 32, temperature: float | None = None
) -> dict[str, float]:
    """Exact-match accuracy of greedy answers per question kind (normalised as `greedy_answers` does); with
    `temperature`, of one sampled answer per question."""
    correct = defaultdict(list)
    for index, answer in enumerate(greedy_answers(model, processor, rows, batch_size, temperature)):
        correct[rows[index]["kind"]].append(answer == rows[index]["answer"])
    return {kind: sum(hits) / len(hits) for kind, hits in correct.items()}


def hallucination_rates(model, processor, rows) -> dict[str, float]:
    """`hallucination_rate` and `absent_attribute_rate` (module docstring) of greedy answers to question rows."""
    answers = greedy_answers(model, processor, rows)
    wrong = absent = 0
    for index, answer in enumerate(answers):
        row = rows[index]
        if answer != row["answer"]:
            wrong += 1
            absent += answer in ANSWER_WORDS[row["kind"]]
    return {"hallucination_rate": wrong / len(answers), "absent_attribute_rate": absent / len(answers)}


__all__ = ["answer_accuracy", "format_accuracy_table", "greedy_answers", "hallucination_rates", "normalised_answer"]
