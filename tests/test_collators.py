"""XGenMMDataCollator: exact label masks (computed here from the rendered text, independently of the collator),
image tokens and padding never targets, truncation that never cuts an image, and the bad-row policy."""

import logging
import re

import pytest
import torch

from modeling_helpers import tiny_model
from modeling_xgenmm.train.collators import BadSampleError, XGenMMDataCollator
from processing_helpers import synthetic_image, tiny_processor
from training_helpers import (
    IMAGE_SIZES_WH,
    multi_image_rows,
    pretraining_rows,
    sft_rows,
    write_images,
)


IMAGE_ID, PAD_ID = 992, 991
# Image tokens per image of IMAGE_SIZES_WH in the tiny config: views (1 + grid crops) x 8 latents.
TOKENS_PER_IMAGE = [24, 24, 24, 32]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def images():
    return [synthetic_image("RGB", width, height, seed=index) for index, (width, height) in enumerate(IMAGE_SIZES_WH)]


def expand_images(text: str, image_tokens: list[int]) -> str:
    """`text` with its k-th `<image>` written `image_tokens[k]` times, as the processor must expand it."""
    pieces = text.split("<image>")
    return pieces[0] + "".join("<image>" * count + piece for count, piece in zip(image_tokens, pieces[1:]))


def expected_encoding(processor, expanded_text: str, target_spans: list[tuple[int, int]] | None):
    """Ids and labels computed without the collator: the tokenizer's character offsets decide, for each token,
    whether it lies inside one of `target_spans` (`None`: every token is a target); image tokens never are."""
    encoding = processor.tokenizer(expanded_text, add_special_tokens=False, return_offsets_mapping=True)
    spans = [(0, len(expanded_text))] if target_spans is None else target_spans
    labels = [
        token if token != IMAGE_ID and any(low <= start and end <= high for low, high in spans) else -100
        for token, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"])
    ]
    return encoding["input_ids"], labels


def assistant_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of each answer and its `<|end|>\\n`: from after `<|assistant|>\\n` to after `<|end|>\\n`."""
    starts = [match.end() for match in re.finditer(re.escape("<|assistant|>\n"), text)]
    return [(start, text.index("<|end|>\n", start) + len("<|end|>\n")) for start in starts]


def test_multi_turn_conversation_labels_are_exactly_the_assistant_answers(processor, images):
    conversation = {
        "messages": [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]},
            {"role": "assistant", "content": "Red."},
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Both?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Green and blue, mostly."}]},
            {"role": "user", "content": "Thanks!"},
        ],
        "images": images[:3],
    }
    text = (
        "<|system|>\nAnswer in one word.<|end|>\n<|user|>\n<image>\nColor?<|end|>\n<|assistant|>\nRed.<|end|>\n"
        "<|user|>\n<image> <image> Both?<|end|>\n<|assistant|>\nGreen and blue, mostly.<|end|>\n"
        "<|user|>\nThanks!<|end|>\n"
    )
    assert processor.apply_chat_template(conversation["messages"]) == text
    expanded = expand_images(text, TOKENS_PER_IMAGE[:3])
    ids, labels = expected_encoding(processor, expanded, assistant_spans(expanded))
    batch = XGenMMDataCollator(processor)([conversation])
    assert batch["input_ids"][0].tolist() == ids
    assert batch["labels"][0].tolist() == labels
    targets = batch["labels"][0][batch["labels"][0] != -100]
    assert processor.decode(targets) == "Red.<|end|>Green and blue, mostly.<|end|>"  # <|end|> takes its newline
    assert batch["pixel_values"].shape == (3, 5, 3, 56, 56)  # one row per image, as wide as the most views (5)
    assert batch["image_sizes"].tolist() == [[30, 60], [100, 40], [56, 56]]


def test_document_labels_are_every_text_token_and_no_image_token(processor, images):
    row = {"text": "Look: <image>A red one.<|endofchunk|><image><image>Two more.<|endofchunk|>", "images": images[1:]}
    ids, labels = expected_encoding(processor, expand_images(row["text"], TOKENS_PER_IMAGE[1:]), None)
    batch = XGenMMDataCollator(processor)([row])
    assert batch["input_ids"][0].tolist() == ids
    assert batch["labels"][0].tolist() == labels
    assert (batch["labels"] == IMAGE_ID).sum() == 0 and (batch["input_ids"] == IMAGE_ID).sum() == 24 + 24 + 32
    assert batch["pixel_values"].shape == (3, 5, 3, 56, 56)  # 3, 3 and 4 views, padded to the most (5)
    assert [bool(batch["pixel_values"][image, views - 1].any()) for image, views in enumerate((3, 3, 4))] == [True] * 3
    assert [bool(batch["pixel_values"][image, views:].any()) for image, views in enumerate((3, 3, 4))] == [False] * 3


def test_caption_pair_trains_on_the_caption_and_its_end_of_chunk(processor, images):
    batch = XGenMMDataCollator(processor)([{"image": images[0], "caption": "A red box."}])
    ids, labels = expected_encoding(processor, expand_images("<image>A red box.<|endofchunk|>", [24]), None)
    assert batch["input_ids"][0].tolist() == ids and batch["labels"][0].tolist() == labels
    assert processor.decode(batch["labels"][0][batch["labels"][0] != -100]) == "A red box.<|endofchunk|>"


def test_batch_is_right_padded_and_padding_is_never_a_target(processor, images):
    rows = [
        {"image": images[0], "caption": "A long caption with quite a few more words in it."},
        {"text": "Short.", "images": []},
    ]
    batch = XGenMMDataCollator(processor)(rows)
    single = [XGenMMDataCollator(processor)([row]) for row in rows]
    length = single[1]["input_ids"].shape[1]
    assert batch["input_ids"].shape[1] == single[0]["input_ids"].shape[1] > length
    assert batch["input_ids"][1, :length].tolist() == single[1]["input_ids"][0].tolist()
    assert (batch["input_ids"][1, length:] == PAD_ID).all()
    assert batch["attention_mask"][1].tolist() == [1] * length + [0] * (batch["input_ids"].shape[1] - length)
    assert (batch["labels"][1, length:] == -100).all()
    assert batch["labels"][1, :length].tolist() == single[1]["labels"][0].tolist()
    assert batch["attention_mask"][0].all()
    padded = XGenMMDataCollator(processor, pad_to_multiple_of=64)(rows)
    assert padded["input_ids"].shape[1] == 64 * -(-batch["input_ids"].shape[1] // 64)
    assert (padded["labels"][:, batch["input_ids"].shape[1] :] == -100).all()


def test_text_only_batch_has_zero_views(processor):
    batch = XGenMMDataCollator(processor)([{"text": "No images here."}])
    assert batch["pixel_values"].shape == (0, 1, 3, 56, 56) and batch["image_sizes"].shape == (0, 2)


def test_llava_rows_paths_and_pil_images_give_the_same_batch(processor, tmp_path):
    paths = [str(tmp_path / path) for path in write_images(tmp_path)]
    from PIL import Image

    opened = [Image.open(path) for path in paths]
    llava = sft_rows(paths, count=4)[0::2]  # LLaVA form, paths
    messages = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]},
                {"role": "assistant", "content": row["conversations"][1]["value"]},
            ],
            "images": [opened[paths.index(row["image"])]],
        }
        for row in llava
    ]
    first, second = XGenMMDataCollator(processor)(llava), XGenMMDataCollator(processor)(messages)
    for key in ("input_ids", "attention_mask", "labels", "pixel_values", "image_sizes"):
        assert torch.equal(first[key], second[key]), key


def test_multi_image_conversations_in_string_and_block_form(processor, images):
    batch = XGenMMDataCollator(processor)(multi_image_rows(images, count=2))
    assert batch["image_sizes"].shape == (6, 2)
    for row in range(2):
        targets = processor.decode(batch["labels"][row][batch["labels"][row] != -100])
        assert re.fullmatch(r"The \w+ one\.<\|end\|>It is \w+\.<\|end\|>", targets), targets
        # Image tokens are in user turns only: none is a target.
        assert ((batch["input_ids"][row] == IMAGE_ID) & (batch["labels"][row] != -100)).sum() == 0


def test_collated_batch_runs_through_the_model(processor, images, tiny_config):
    from modeling_xgenmm import XGenMMForConditionalGeneration

    torch.manual_seed(0)
    model = XGenMMForConditionalGeneration(tiny_config)
    rows = sft_rows(images, 2) + pretraining_rows(images, 2) + multi_image_rows(images, 1)
    batch = XGenMMDataCollator(processor)(rows)
    loss = model(**batch).loss
    logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    targets = batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(loss, manual)


# --- truncation -----------------------------------------------------------------------------------------------


def test_truncation_cuts_before_an_image_that_does_not_fit_and_drops_its_pixels(processor, images):
    row = {"text": "<image>A red one.<|endofchunk|><image>A green one.<|endofchunk|>", "images": images[:2]}
    full = XGenMMDataCollator(processor)([row])
    second_image_start = int((full["input_ids"][0] == IMAGE_ID).nonzero()[24])
    batch = XGenMMDataCollator(processor, max_length=second_image_start + 10)([row])
    assert batch["input_ids"].shape[1] == second_image_start
    assert batch["input_ids"][0].tolist() == full["input_ids"][0, :second_image_start].tolist()
    assert (batch["input_ids"] == IMAGE_ID).sum() == 24
    assert batch["pixel_values"].shape[:2] == (1, 5) and batch["image_sizes"].tolist() == [[30, 60]]


def test_every_max_length_keeps_whole_images_or_raises(processor, images):
    """For each max_length from 1 to the full length: the output is the longest prefix of the full sequence that fits
    and cuts no image, and holds exactly the pixels and sizes of the whole images it keeps."""
    row = {"text": "Intro. <image>One.<|endofchunk|><image><image>Two.<|endofchunk|>", "images": images[1:]}
    full = XGenMMDataCollator(processor)([row])
    length = full["input_ids"].shape[1]
    run_starts = [0, 24, 48]  # image k starts at the run_starts[k]-th image token
    image_starts = [int((full["input_ids"][0] == IMAGE_ID).nonzero()[start]) for start in run_starts]
    image_ends = [start + count for start, count in zip(image_starts, TOKENS_PER_IMAGE[1:])]
    for max_length in range(1, length + 1):
        batch = XGenMMDataCollator(processor, max_length=max_length)([row])
        kept = sum(end <= max_length for end in image_ends)
        expected_length = max_length if kept == 3 else min(max_length, image_starts[kept])
        assert batch["input_ids"].shape[1] == expected_length, max_length
        assert batch["input_ids"][0].tolist() == full["input_ids"][0, :expected_length].tolist()
        assert (batch["input_ids"] == IMAGE_ID).sum() == sum(TOKENS_PER_IMAGE[1 : 1 + kept])
        assert batch["pixel_values"].shape[0] == kept
        assert kept == 0 or torch.equal(batch["pixel_values"], full["pixel_values"][:kept])
        assert batch["image_sizes"].tolist() == full["image_sizes"][:kept].tolist()


def test_truncation_that_leaves_no_answer_is_a_bad_row(processor, images):
    row = sft_rows(images, count=2)[1]
    with pytest.raises(BadSampleError, match=r"id 'sft-1'.*no target token is left after truncation to max_length=40"):
        XGenMMDataCollator(processor, max_length=40)([row])


# --- bad rows -------------------------------------------------------------------------------------------------


BAD_ROWS = [
    ({"id": "a", "messages": [], "images": []}, r"the conversation is empty"),
    ({"id": "b", "messages": [{"role": "user", "content": "Hi"}]}, r"no assistant turn"),
    (
        {"id": "c", "messages": [{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": "Yo"}]},
        r"0 images but 1 image blocks or <image> markers",
    ),
    (
        {"id": "d", "text": "<image><image>Two", "images": ["IMAGE"]},
        r"Found total 2 <image> tokens and 1 images",
    ),
    ({"id": "e", "image": "img/missing.png", "caption": "x"}, r"image file not found: img/missing.png"),
    ({"id": "f", "image": "BROKEN", "caption": "x"}, r"the image file .*broken.png' is not an image Pillow can read"),
    ({"id": "g", "question": "?"}, r"unknown row format with keys \['id', 'question'\]"),
    (
        {"id": "h", "conversations": [{"from": "robot", "value": "beep"}]},
        r"LLaVA turn 0 is from 'robot'; expected one of",
    ),
    (
        {"id": "i", "messages": [{"role": "tool", "content": "42"}, {"role": "assistant", "content": "ok"}]},
        r"message 0 has role 'tool'; expected one of \['system', 'user', 'assistant'\]",
    ),
]


@pytest.fixture
def bad_row(request, tmp_path, images):
    row, pattern = request.param
    (tmp_path / "broken.png").write_bytes(b"not a png")
    row = {
        key: (
            [images[0] if image == "IMAGE" else image for image in value]
            if isinstance(value, list)
            else str(tmp_path / "broken.png")
            if value == "BROKEN"
            else value
        )
        for key, value in row.items()
    }
    return row, pattern


@pytest.mark.parametrize("bad_row", BAD_ROWS, indirect=True, ids=[row["id"] for row, _ in BAD_ROWS])
def test_bad_row_raises_naming_the_row_and_the_problem(processor, images, bad_row):
    row, pattern = bad_row
    good = sft_rows(images, count=1)[0]
    with pytest.raises(BadSampleError, match=rf"position 1 in the batch, id '{row['id']}'\): .*{pattern}"):
        XGenMMDataCollator(processor)([good, row])


def test_bad_rows_are_skipped_counted_and_logged_when_asked(processor, images, caplog):
    good = sft_rows(images, count=2)
    rows = [good[0], {"id": "x", "messages": []}, good[1], {"id": "y", "image": "gone.png", "caption": "c"}]
    collator = XGenMMDataCollator(processor, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING, logger="modeling_xgenmm.train.collators"):
        batch = collator(rows)
        collator(rows[1:2] + rows[:1])
    assert collator.num_skipped == 3
    assert torch.equal(batch["input_ids"], XGenMMDataCollator(processor)(good)["input_ids"])
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 3 and "id 'y'" in warnings[1] and "image file not found: gone.png" in warnings[1]
    assert warnings[2].endswith("(3 skipped so far)")


def test_a_first_batch_of_bad_rows_raises_even_when_skipping(processor):
    with pytest.raises(BadSampleError, match=r"all 2 rows of the first batch are bad"):
        XGenMMDataCollator(processor, on_bad_sample="skip")([{"messages": []}, {"text": ""}])


def test_a_later_batch_of_bad_rows_becomes_a_step_without_targets_when_skipping(processor, images):
    collator = XGenMMDataCollator(processor, on_bad_sample="skip")
    good = collator([{"text": "<image>A red one.<|endofchunk|>", "images": images[:1]}])
    empty = collator([{"messages": []}, {"text": ""}])
    assert collator.num_skipped == 2 and collator.num_empty_batches == 1
    assert torch.equal(empty["input_ids"], good["input_ids"]) and (empty["labels"] == -100).all()
    model = tiny_model()
    loss = model(**empty).loss
    assert loss.item() == 0.0  # not NaN: there is no target to average over
    loss.backward()
    assert all(torch.isfinite(param.grad).all() for param in model.parameters() if param.grad is not None)


def test_rows_of_a_kind_the_collator_does_not_take_are_bad(processor, images):
    collator = XGenMMDataCollator(processor, row_kinds=("conversation",))
    with pytest.raises(BadSampleError, match=r"a caption row, but this collator takes conversation rows"):
        collator([{"image": images[0], "caption": "A caption."}])


def test_collator_arguments_are_checked(processor):
    with pytest.raises(ValueError, match=r"on_bad_sample is 'raise' or 'skip', got 'ignore'"):
        XGenMMDataCollator(processor, on_bad_sample="ignore")
    with pytest.raises(ValueError, match=r"max_length is a positive number of tokens or None, got 0"):
        XGenMMDataCollator(processor, max_length=0)
    with pytest.raises(ValueError, match=r"row_kinds are among"):
        XGenMMDataCollator(processor, row_kinds=("video",))
