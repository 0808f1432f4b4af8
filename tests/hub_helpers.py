"""The tiny instruct model as users meet it on the Hub: a seeded random model whose answers depend on its inputs,
its processor, its generation config, a saved folder, and test images."""

import torch
from transformers import AutoProcessor, GenerationConfig

from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration
from paths import TINY_RANDOM
from processing_helpers import png_bytes, synthetic_image


# (width, height) of test images whose best grids differ: 2x1, 1x2 and 2x2 crops of the 56-px views.
IMAGE_SIZES = [(100, 45), (45, 100), (110, 120), (150, 50)]


def tiny_instruct_model(seed: int = 0) -> XGenMMForConditionalGeneration:
    """`hub_configs/tiny-random` with random weights drawn wider than the default 0.02: at that scale the tiny model's
    greedy answers hardly depend on the images or the text, so comparisons between paths could not tell them apart."""
    config = XGenMMConfig.from_pretrained(TINY_RANDOM)
    config.text_config.initializer_range = 0.3
    config.perceiver_config.initializer_range = 0.3
    torch.manual_seed(seed)
    model = XGenMMForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(TINY_RANDOM)
    return model


def tiny_processor():
    return AutoProcessor.from_pretrained(TINY_RANDOM)


def sample_images() -> list:
    return [synthetic_image("RGB", width, height, seed=index) for index, (width, height) in enumerate(IMAGE_SIZES)]


def write_pngs(images: list, folder) -> list[str]:
    paths = []
    for index, image in enumerate(images):
        path = folder / f"image_{index}.png"
        path.write_bytes(png_bytes(image))
        paths.append(str(path))
    return paths


def chat(text: str, *image_blocks: dict) -> list[dict]:
    """One user turn: the image blocks, then the text."""
    return [{"role": "user", "content": [*image_blocks, {"type": "text", "text": text}]}]


def generate_answers(model, processor, inputs, **generate_kwargs) -> list[str]:
    """The reference path: `model.generate` on processed inputs, decoded by the processor."""
    output = model.generate(**inputs, **generate_kwargs)
    return processor.post_process_image_text_to_text(output[:, inputs["input_ids"].shape[1] :])


def answers_to_chats(model, processor, chats: list, **generate_kwargs) -> list[str]:
    inputs = processor.apply_chat_template(
        chats,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    return generate_answers(model, processor, inputs, **generate_kwargs)
