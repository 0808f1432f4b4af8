"""Helpers for the processing tests: fixture decoding, an independent transcription of the released image pipeline,
synthetic images in every PIL mode, malformed image files, and a tokenizer folder in the original Phi-3 format."""

import base64
import io
import json
import lzma
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load

from paths import TINY_RANDOM


def fixture_pixels(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    """The uint8 tensors of `image_processing/pixel_values_u8.safetensors.xz` (fixture README section 4)."""
    index = json.loads((fixtures_dir / "image_processing" / "index.json").read_text())
    return load(lzma.decompress((fixtures_dir / index["pixel_file"]).read_bytes()))


def fixture_float(codes: torch.Tensor) -> torch.Tensor:
    """The released float32 pixel values of uint8 codes: ToTensor then Normalize(0.5, 0.5), in that order."""
    return (codes.float() / 255 - 0.5) / 0.5


def released_grids_hw(fixtures_dir: Path) -> list[list[int]]:
    """The instruct checkpoint's grids, stored as (width, height) in the original format, as (height, width)."""
    config = json.loads((fixtures_dir / "checkpoints" / "instruct" / "preprocessor_config.json").read_text())
    return [[height, width] for width, height in config["grids"]]


def released_view_size(fixtures_dir: Path) -> list[int]:
    """The (height, width) of every view of the released image processor (its `size`)."""
    config = json.loads((fixtures_dir / "checkpoints" / "instruct" / "preprocessor_config.json").read_text())
    return list(config["size"])


def original_views(image: Image.Image, grids_wh: list[list[int]] | None, side: int) -> np.ndarray:
    """uint8 `(views, 3, side, side)` written from the fixture README's description of the released processor
    (grids as (width, height), as the original lists them); `grids_wh=None` is the base processor."""
    views = [image.resize((side, side))]
    if grids_wh:
        width, height = image.size
        best, best_effective, best_waste = None, 0, math.inf
        for grid_width, grid_height in grids_wh:
            scale = min(grid_width / width, grid_height / height)
            effective = min(int(width * scale) * int(height * scale), width * height)
            waste = grid_width * grid_height - effective
            if effective > best_effective or (effective == best_effective and waste < best_waste):
                best, best_effective, best_waste = (grid_width, grid_height), effective, waste
        grid_width, grid_height = best
        if grid_width / width < grid_height / height:
            new_size = (grid_width, min(math.ceil(height * grid_width / width), grid_height))
        else:
            new_size = (min(math.ceil(width * grid_height / height), grid_width), grid_height)
        canvas = Image.new("RGB", (grid_width, grid_height), (0, 0, 0))
        canvas.paste(image.resize(new_size), ((grid_width - new_size[0]) // 2, (grid_height - new_size[1]) // 2))
        views += [
            canvas.crop((left, top, left + side, top + side))
            for top in range(0, grid_height, side)
            for left in range(0, grid_width, side)
        ]
    return np.stack([np.asarray(view.convert("RGB")).transpose(2, 0, 1) for view in views])


def synthetic_image(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    """Gradients, filled ellipses and 2-px lines in `mode` (alpha modes get an alpha gradient; I;16 spans 0..765)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width)[None, :]
    pixels[..., 1] = np.linspace(255, 0, height)[:, None]
    pixels[..., 2] = 128
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        left, top = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = tuple(int(channel) for channel in rng.integers(0, 256, 3))
        draw.ellipse([left, top, left + width // 4, top + height // 4], fill=colour)
        ends = [int(value) for value in rng.integers(0, [width, height, width, height])]
        draw.line(ends, fill=(255, 255, 255), width=2)
    alpha = Image.fromarray(np.linspace(0, 255, width)[None, :].repeat(height, 0).astype(np.uint8))
    if mode == "RGBA":
        image.putalpha(alpha)
        return image
    if mode == "LA":
        return Image.merge("LA", [image.convert("L"), alpha])
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 3)
    return image.convert(mode)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` RGB pixels, with a tiny (invalid) data chunk: what a
    decompression bomb looks like to a reader that trusts the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def as_base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tiny_processor(backend: str = "torchvision", **image_kwargs):
    """The `hub_configs/tiny-random` processor (56-px views, 8 latents per view) with the given image backend."""
    from transformers import AutoImageProcessor, AutoProcessor

    import modeling_xgenmm  # noqa: F401  (registers the Auto classes)

    processor = AutoProcessor.from_pretrained(TINY_RANDOM)
    processor.image_processor = AutoImageProcessor.from_pretrained(TINY_RANDOM, backend=backend, **image_kwargs)
    return processor


def write_original_phi3_folder(folder, tokenizer):
    """A tokenizer in the format of the released Phi-3 repositories, built from the tiny vocabulary: legacy
    sentencepiece `tokenizer.json` (normalizer prepends "▁", BOS post-processor), `tokenizer_class` LlamaTokenizer,
    Phi-3's added tokens and no image tokens."""
    folder.mkdir()
    tokenizer.save_pretrained(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    image_tokens = {tokenizer.image_token, tokenizer.image_placeholder_token, tokenizer.end_of_chunk_token}
    data["added_tokens"] = [token for token in data["added_tokens"] if token["content"] not in image_tokens]
    data["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    data["pre_tokenizer"] = None
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    (folder / "tokenizer.json").write_text(json.dumps(data))
    added = {
        str(token["id"]): {key: value for key, value in token.items() if key != "id"} for token in data["added_tokens"]
    }
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "legacy": False,
        "model_max_length": 4096,
        "padding_side": "left",
        "added_tokens_decoder": added,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "tokenization_xgenmm.py"):
        (folder / name).unlink(missing_ok=True)
