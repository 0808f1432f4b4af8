"""Builders for tiny models and hand-made model inputs (no processor needed)."""

import torch

from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration
from modeling_xgenmm.modeling_xgenmm import num_image_views
from paths import TINY_RANDOM


def tiny_config(**overrides) -> XGenMMConfig:
    config = XGenMMConfig.from_pretrained(TINY_RANDOM)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_model(config: XGenMMConfig | None = None, seed: int = 0, attn_implementation: str = "eager"):
    torch.manual_seed(seed)
    config = config or tiny_config()
    config._attn_implementation = attn_implementation
    return XGenMMForConditionalGeneration(config).eval()


def make_sample(config: XGenMMConfig, image_sizes: list, num_text: int = 5, seed: int = 0) -> dict:
    """One sample: random text, then for each image its expanded `<image>` tokens and two text tokens; random
    pixels for every view of every image."""
    generator = torch.Generator().manual_seed(seed)
    tokens_per_view = config.perceiver_config.num_latents
    ids = torch.randint(3, 900, (num_text,), generator=generator).tolist()
    views = 0
    for size in image_sizes:
        count = num_image_views(size, config)
        views += count
        ids += [config.image_token_id] * (count * tokens_per_view)
        ids += torch.randint(3, 900, (2,), generator=generator).tolist()
    pixels = torch.randn(views, 3, config.image_size, config.image_size, generator=generator)
    return {"input_ids": ids, "pixel_values": pixels, "image_sizes": [tuple(size) for size in image_sizes]}


def collate(config: XGenMMConfig, samples: list[dict], padding_side: str = "left", per_image: bool = False) -> dict:
    """Pads samples from `make_sample` into one batch. `pixel_values` are every view flattened, or with `per_image`
    the processor's layout: a row per image, zero views after its own up to the batch's most."""
    length = max(len(s["input_ids"]) for s in samples)
    pad = config.text_config.pad_token_id
    input_ids, attention_mask = [], []
    for sample in samples:
        row, filler = sample["input_ids"], [pad] * (length - len(sample["input_ids"]))
        mask, no_mask = [1] * len(row), [0] * len(filler)
        input_ids.append(filler + row if padding_side == "left" else row + filler)
        attention_mask.append(no_mask + mask if padding_side == "left" else mask + no_mask)
    batch = {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attention_mask)}
    sizes = [size for sample in samples for size in sample["image_sizes"]]
    if sizes:
        batch["pixel_values"] = torch.cat([sample["pixel_values"] for sample in samples])
        batch["image_sizes"] = torch.tensor(sizes)
        if per_image:
            views = [num_image_views(size, config) for size in sizes]
            rows = batch["pixel_values"].new_zeros(len(sizes), max(views), *batch["pixel_values"].shape[1:])
            for row, image_views in zip(rows, batch["pixel_values"].split(views)):
                row[: len(image_views)] = image_views
            batch["pixel_values"] = rows
    return batch
