"""Conversations that go on: turn 2 continues from turn 1's cache (transformers' "re-use a cache to continue
generation") and gives the greedy ids of a fresh call on the whole conversation with all its images, whether it passes
every image of the conversation (those in the cache are not encoded again) or only the new ones."""

import copy

import pytest
import torch

from hub_helpers import sample_images, tiny_instruct_model, tiny_processor
from modeling_xgenmm import XGenMMConfig
from modeling_xgenmm.checkpoint.contents import build_processor
from modeling_xgenmm.compat_xgenmm import CACHE_ARG, get_cache


pytestmark = pytest.mark.core

FIRST_TURN_TOKENS, SECOND_TURN_TOKENS = 5, 6


def model_and_processor(anyres: bool):
    model = tiny_instruct_model(seed=1)
    processor = tiny_processor()
    if not anyres:
        model.config.anyres = False
        processor = build_processor(XGenMMConfig.from_dict(model.config.to_dict()), processor.tokenizer)
    model.generation_config.eos_token_id = None  # every call decodes its full length
    return model, processor


def greedy(model, **inputs) -> torch.Tensor:
    return model.generate(**inputs, do_sample=False, max_new_tokens=SECOND_TURN_TOKENS)


def first_turn(model, processor, images: list[list]):
    """A batch of two conversations, each with its images, and turn 1's output with its cache."""
    texts = ["<|user|>\n" + "<image> " * len(row) + "What is here?<|end|>\n<|assistant|>\n" for row in images]
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
    output = model.generate(**inputs, do_sample=False, max_new_tokens=FIRST_TURN_TOKENS, return_dict_in_generate=True)
    return inputs, output


def second_turn(processor, text: str, new_images: list | None, batch: int):
    """The tokens turn 2 appends to each conversation (the same text, and same-sized new images, in both rows)."""
    images = [[image] for image in new_images] if new_images else None
    return processor(text=[text] * batch, images=images, return_tensors="pt")


def whole_conversation(turn1_inputs, turn1_output, turn2):
    sequences = turn1_output.sequences
    attention = torch.cat(
        [turn1_inputs["attention_mask"], torch.ones_like(sequences[:, turn1_inputs["input_ids"].shape[1] :])], 1
    )
    return {
        "input_ids": torch.cat([sequences, turn2["input_ids"]], 1),
        "attention_mask": torch.cat([attention, turn2["attention_mask"]], 1),
    }


def images_of(*turns: tuple[dict, list[int]]) -> dict:
    """The pixel rows and sizes of the images of several turns, conversation after conversation (as the model reads
    them): `turns` are (processor output, images per conversation)."""
    rows, sizes = [], []
    for conversation in range(len(turns[0][1])):
        for inputs, counts in turns:
            first = sum(counts[:conversation])
            rows.append(inputs["pixel_values"][first : first + counts[conversation]])
            sizes.append(inputs["image_sizes"][first : first + counts[conversation]])
    return {"pixel_values": torch.cat(rows), "image_sizes": torch.cat(sizes)}


@pytest.mark.parametrize("anyres", [True, False], ids=["any-resolution", "base"])
@pytest.mark.parametrize("new_image", [False, True], ids=["text", "new image"])
def test_turn_two_from_turn_ones_cache_equals_a_fresh_call_on_the_whole_conversation(anyres, new_image):
    model, processor = model_and_processor(anyres)
    images = sample_images()
    turn1_inputs, turn1 = first_turn(model, processor, [[images[0], images[1]], [images[2]]])
    text = "<|end|>\n<|user|>\n" + ("<image>\n" if new_image else "") + "And now?<|end|>\n<|assistant|>\n"
    turn2 = second_turn(processor, text, [images[3], images[3].transpose(0)] if new_image else None, batch=2)
    conversation = whole_conversation(turn1_inputs, turn1, turn2)
    turns = [(turn1_inputs, [2, 1])] + ([(turn2, [1, 1])] if new_image else [])
    every_image = images_of(*turns)

    fresh = greedy(model, **conversation, **every_image)
    cache = get_cache(turn1)
    assert cache.get_seq_length() == turn1.sequences.shape[1] - 1
    encoded = []
    hook = model.model.vision_tower.register_forward_hook(lambda module, args, output: encoded.append(len(output[0])))
    with_every_image = greedy(model, **conversation, **every_image, **{CACHE_ARG: copy.deepcopy(cache)})
    only_new = images_of((turn2, [1, 1])) if new_image else {}
    with_new_images_only = greedy(model, **conversation, **only_new, **{CACHE_ARG: copy.deepcopy(cache)})
    hook.remove()

    assert torch.equal(with_every_image, fresh)
    assert torch.equal(with_new_images_only, fresh)
    # The images of turn 1 were not encoded again: only the new images' views reached the tower.
    new_views = sum(model.model.views_per_image(only_new["image_sizes"], only_new["pixel_values"])) if new_image else 0
    assert encoded == ([new_views, new_views] if new_image else [])


def test_a_forgotten_image_after_the_cache_is_refused():
    model, processor = model_and_processor(anyres=True)
    images = sample_images()
    turn1_inputs, turn1 = first_turn(model, processor, [[images[0]]])
    turn2 = second_turn(processor, "<|end|>\n<|user|>\n<image>\nAnd this?<|end|>\n<|assistant|>\n", [images[1]], 1)
    conversation = whole_conversation(turn1_inputs, turn1, turn2)
    forgotten = int((turn2["input_ids"] == model.config.image_token_id).sum())
    with pytest.raises(ValueError, match=rf"input_ids hold {forgotten} image tokens but no pixel_values were given"):
        greedy(model, **conversation, **{CACHE_ARG: copy.deepcopy(get_cache(turn1))})


def test_a_cache_that_ends_inside_an_image_is_refused():
    model, processor = model_and_processor(anyres=True)
    inputs = processor(text=["<|user|>\n<image>\nHi"], images=[[sample_images()[0]]], return_tensors="pt")
    start = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    with torch.no_grad():
        partial = model(input_ids=inputs["input_ids"][:, : start + 3], use_cache=True)
    with pytest.raises(ValueError, match=r"the cache \(\d+ positions\) ends inside the tokens of image 0"):
        greedy(model, **inputs, **{CACHE_ARG: get_cache(partial)})


def test_inputs_embeds_with_the_images_in_them_are_not_checked_and_give_the_pixels_greedy_ids():
    model, processor = model_and_processor(anyres=True)
    inputs = processor(text=["<|user|>\n<image>\nHi<|end|>\n<|assistant|>\n"], images=[[sample_images()[1]]],
                       return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        features = torch.cat(model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output)
        mask = (inputs["input_ids"] == model.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(mask, features)
    expected = greedy(model, **inputs)
    from_embeds = greedy(model, input_ids=inputs["input_ids"], inputs_embeds=embeds,
                         attention_mask=inputs["attention_mask"])  # fmt: skip
    assert torch.equal(from_embeds[:, -SECOND_TURN_TOKENS:], expected[:, -SECOND_TURN_TOKENS:])
