# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The benchmark presets: model sizes built from `hub_configs/` configs with random weights (see `run.py`). Imports
only the package's public classes, so that `compare.py` runs it against older checkouts too."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_xgenmm import XGenMMConfig
from xgenmm_processing import XGenMMTokenizer


REPO_ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIGS = REPO_ROOT / "hub_configs"
TOKENIZER_FOLDER = HUB_CONFIGS / "tiny-random"
V15 = "xgen-mm-phi3-mini-instruct-singleimg-r-v1.5"


@dataclass(frozen=True)
class Preset:
    """One size of the benchmark: the model, how much each measurement runs, and where it may run."""

    config: str  # folder of hub_configs/ whose config.json the model starts from
    dtype: torch.dtype  # weights for generation and loading; training keeps fp32 master weights (the policy)
    new_tokens: int  # N of the decode measurement
    repeats: int  # timed runs per measurement: the best counts (training steps: the median)
    train_rows: int  # preference rows per SFT / DPO step
    compile_backend: str = "inductor"
    needs_cuda: bool = False
    overrides: dict = field(default_factory=dict)  # sub-config fields replaced, {"text_config": {...}, ...}


PRESETS = {
    "tiny": Preset("tiny-random", torch.float32, new_tokens=16, repeats=1, train_rows=2, compile_backend="eager"),
    "small": Preset(
        V15,
        torch.float32,
        new_tokens=32,
        repeats=3,
        train_rows=4,
        overrides={
            "vision_config": {
                "hidden_size": 192,
                "intermediate_size": 768,
                "num_hidden_layers": 2,
                "num_attention_heads": 3,
                "patch_size": 32,
            },
            "perceiver_config": {
                "hidden_size": 192,
                "output_size": 512,
                "depth": 2,
                "num_heads": 4,
                "head_dim": 48,
                "num_latents": 16,
            },
            "text_config": {
                "hidden_size": 512,
                "intermediate_size": 1536,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "num_key_value_heads": 8,
            },
        },  # fmt: skip
    ),
    "full": Preset(V15, torch.bfloat16, new_tokens=64, repeats=3, train_rows=8, needs_cuda=True),
}


def preset_config(preset: Preset, tokenizer: XGenMMTokenizer) -> XGenMMConfig:
    """The preset's config, with the tokenizer's special-token ids."""
    config = json.loads((HUB_CONFIGS / preset.config / "config.json").read_text())
    for sub_config, fields in preset.overrides.items():
        config[sub_config] = {**config[sub_config], **fields}
    config["image_token_id"] = tokenizer.convert_tokens_to_ids(getattr(tokenizer, "image_token", "<image>"))
    config["text_config"] |= {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return XGenMMConfig.from_dict(config)
