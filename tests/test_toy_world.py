"""The toy world: rendered scenes show what their rows say (checked on the pixels, not on the scene object), splits
are reproducible, answers are balanced, and the toy-world command trains a model that answers far above chance."""

import random
import re
import sys
from collections import Counter

import numpy as np
import pytest

from modeling_xgenmm.cli import main as cli_main
from modeling_xgenmm.toy_world.data import (
    BACKGROUND,
    CELL,
    COLORS,
    NUMBERS,
    SHAPES,
    Scene,
    ToyWorldRows,
    caption_row,
    document_row,
    pair_row,
    preference_row,
    question_row,
)
from modeling_xgenmm.toy_world.evaluation import format_accuracy_table
from modeling_xgenmm.toy_world.recipe import ToyWorldSettings, fine_tuning_rows, held_out_rows, pretraining_rows
from paths import REPO_ROOT
from training_helpers import noisy_lines, run_fresh


def painted_cells(image) -> list[tuple[int, int, int]]:
    """The mean colour of the painted pixels of every cell that has any (read from the pixels alone)."""
    pixels = np.asarray(image).astype(int)
    found = []
    for top in range(0, pixels.shape[0], CELL):
        for left in range(0, pixels.shape[1], CELL):
            cell = pixels[top : top + CELL, left : left + CELL].reshape(-1, 3)
            # Anti-aliased edges blend with the background; pixels far from it are the shape's own colour.
            painted = cell[np.abs(cell - np.array(BACKGROUND)).sum(axis=1) > 150]
            if len(painted) > 20:
                found.append(tuple(painted.mean(axis=0)))
    return found


def nearest_color(rgb) -> str:
    return min(COLORS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLORS[name], rgb)))


def seen(image) -> tuple[str, str]:
    """(colour name, count word) of an image, from its pixels."""
    cells = painted_cells(image)
    colors = {nearest_color(rgb) for rgb in cells}
    assert len(colors) == 1, colors
    return colors.pop(), NUMBERS[len(cells)]


def painted_fraction(image) -> float:
    """The fraction of its cell a single shape covers."""
    pixels = np.asarray(image).astype(int)
    painted = np.abs(pixels - np.array(BACKGROUND)).sum(axis=2) > 150
    return painted.sum() / CELL**2


@pytest.mark.parametrize("layout", [(2, 2), (3, 1), (1, 3)])
def test_a_scene_renders_its_count_of_shapes_in_its_colour_one_per_cell(layout):
    for count in range(1, layout[0] * layout[1] + 1):
        scene = Scene("square", "purple", count, layout, seed=count)
        image = scene.render()
        assert image.size == (layout[0] * CELL, layout[1] * CELL)
        assert seen(image) == ("purple", NUMBERS[count])


def test_shapes_differ_in_their_pixels():
    # One shape at the same size and place (circumradius r): the painted areas follow geometry, triangle 1.30 r^2 <
    # square 2 r^2 < cross (arms r/3 wide) 2.22 r^2 < circle 3.14 r^2.
    area = {shape: painted_fraction(Scene(shape, "blue", 1, (1, 3), seed=5).render()) for shape in SHAPES}
    assert area["triangle"] < area["square"] < area["cross"] < area["circle"], area
    assert area["circle"] / area["triangle"] == pytest.approx(3.14 / 1.30, rel=0.1)


def test_rows_are_a_pure_function_of_seed_and_index():
    rows, again, other = (
        ToyWorldRows(question_row, 10, seed=3),
        ToyWorldRows(question_row, 10, seed=3),
        ToyWorldRows(question_row, 10, seed=4),
    )
    for index in range(10):
        assert rows[index]["messages"] == again[index]["messages"]
        assert np.array_equal(np.asarray(rows[index]["images"][0]), np.asarray(again[index]["images"][0]))
    assert [rows[index]["answer"] for index in range(10)] != [other[index]["answer"] for index in range(10)]
    with pytest.raises(IndexError, match="row 10 of 10"):
        rows[10]


def test_captions_and_documents_describe_their_images():
    for index in range(20):
        row = caption_row(random.Random(index), index)
        color, count = seen(row["image"])
        assert row["caption"].startswith(f"{count} {color} ")
    row = document_row(random.Random(7), 0)
    chunks = row["text"].split("<|endofchunk|>")[:-1]
    assert len(chunks) == len(row["images"]) >= 2
    for chunk, image in zip(chunks, row["images"]):
        color, count = seen(image)
        assert chunk.startswith("<image>") and chunk[len("<image>") :].startswith(f"{count} {color} ")


def test_questions_are_answered_by_the_pixels_and_cycle_through_the_kinds():
    rows = ToyWorldRows(question_row, 60, seed=11)
    kinds = Counter()
    for index in range(len(rows)):
        row = rows[index]
        kinds[row["kind"]] += 1
        assert row["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]}
        color, count = seen(row["images"][0])
        if row["kind"] == "color":
            assert row["answer"] == color
        elif row["kind"] == "count":
            assert row["answer"] == count
        else:
            assert row["answer"] in SHAPES
    assert kinds == {"color": 20, "shape": 20, "count": 20}


def test_two_image_questions_are_right_and_balanced():
    rows = ToyWorldRows(pair_row, 300, seed=12)
    answers = Counter()
    for index in range(len(rows)):
        row = rows[index]
        first, second = (seen(image) for image in row["images"])
        verdict = row["answer"].split(", ")[-1]
        answers[(row["kind"], verdict)] += 1
        if row["kind"] == "same_color":
            assert row["answer"] == f"{first[0]} and {second[0]}, {'yes' if first[0] == second[0] else 'no'}"
        elif row["kind"] == "same_shape":
            named = row["answer"].split(", ")[0].split(" and ")
            assert all(shape in SHAPES for shape in named) and verdict == ("yes" if named[0] == named[1] else "no")
        elif row["kind"] == "more":
            counts = [NUMBERS.index(first[1]), NUMBERS.index(second[1])]
            assert counts[0] != counts[1]
            assert row["answer"] == ("first" if counts[0] > counts[1] else "second")
    # Each kind's two verdicts are near 50/50 (100 rows per kind), so always giving one of them scores about half.
    for kind, (one, two) in {
        "same_shape": ("yes", "no"),
        "same_color": ("yes", "no"),
        "more": ("first", "second"),
    }.items():
        assert 35 <= answers[(kind, one)] <= 65 and answers[(kind, one)] + answers[(kind, two)] == 100


def test_preference_rows_reject_an_attribute_the_image_does_not_show():
    for index in range(30):
        row = preference_row(random.Random(index), index)
        color, count = seen(row["images"][0])
        chosen, rejected = row["chosen"][0]["content"][0]["text"], row["rejected"][0]["content"][0]["text"]
        assert chosen == row["answer"] != rejected == row["hallucination"]
        vocabulary = {"color": set(COLORS), "shape": set(SHAPES), "count": set(NUMBERS[1:])}[row["kind"]]
        assert rejected in vocabulary
        assert rejected != {"color": color, "count": count}.get(row["kind"], chosen)


def test_stage_rows_have_the_sizes_and_mix_of_the_settings():
    settings = ToyWorldSettings(
        pretrain_steps=3, sft_steps=5, pretrain_batch_size=4, sft_batch_size=4, pair_fraction=0.75, eval_rows=6
    )
    assert len(pretraining_rows(settings)) == 12
    tuning = [row["kind"] for row in fine_tuning_rows(settings)]
    assert len(tuning) == 20 and sum(kind in ("same_shape", "same_color", "more") for kind in tuning) == 15
    held_out = held_out_rows(settings)
    assert Counter(len(row["images"]) for row in held_out) == {1: 6, 2: 6}
    # other seeds: no held-out image is a training image
    training_images = {row["images"][0].tobytes() for row in fine_tuning_rows(settings)}
    assert not any(row["images"][0].tobytes() in training_images for row in held_out)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sft_steps", 0, "ToyWorldSettings.sft_steps must be at least 1, got 0"),
        ("pair_fraction", 1.5, "share of two-image rows in fine-tuning, between 0 and 1; got 1.5"),
    ],
)
def test_settings_refuse_impossible_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ToyWorldSettings(**{field: value})


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("--pair-fraction", "1.5", "argument --pair-fraction: expected a fraction between 0 and 1, got 1.5"),
        ("--sft-steps", "0", "argument --sft-steps: expected a positive integer, got 0"),
    ],
)
def test_the_toy_world_command_refuses_bad_sizes_before_training(argument, value, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["toy-world", "--output-dir", str(tmp_path), argument, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_accuracy_table_says_which_target_is_missed():
    accuracy = {"color": 1.0, "shape": 0.7, "count": 1.0, "same_shape": 0.6, "same_color": 0.9, "more": 1.0}
    accuracy.update(single_image=0.9, two_image=2.5 / 3)
    table = format_accuracy_table(accuracy)
    assert "What shape are they?" in table and " 70.0%" in table
    assert "single-image questions" in table and "90.0%  (meets the 90% target)" in table
    accuracy["two_image"] = 0.79
    assert "79.0%  (BELOW the 80% target)" in format_accuracy_table(accuracy)


@pytest.mark.slow
def test_the_toy_world_command_trains_a_model_that_answers_far_above_chance(tmp_path, capsys):
    cli_main(["toy-world", "--quick", "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    rates = {}
    for line in printed.splitlines():
        for question, kind in (("What color", "color"), ("How many", "count")):
            if line.startswith(question):
                rates[kind] = float(line.split()[-1].rstrip("%")) / 100
    # 20 held-out rows of each kind; chance is 1/6 for colour and 1/4 for count (one to four shapes).
    assert rates["color"] >= 0.8 and rates["count"] >= 0.6, printed
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "model" / "config.json").is_file()


def test_a_short_toy_world_run_prints_no_line_that_reads_as_an_error(tmp_path):
    completed = run_fresh(
        [sys.executable, "-m", "modeling_xgenmm.cli", "toy-world", "--quick", "--pretrain-steps", "2",
         "--sft-steps", "2", "--output-dir", tmp_path / "run"],
        cwd=REPO_ROOT,
    )  # fmt: skip
    assert noisy_lines(completed.stdout + completed.stderr) == []
    assert "Held-out exact-match accuracy" in completed.stdout
