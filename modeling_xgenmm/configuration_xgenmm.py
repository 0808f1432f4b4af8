# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""xGen-MM (BLIP-3) configuration: vision tower + perceiver resampler + causal language model.

This file is copied verbatim into every Hub folder, so it imports only `transformers` and `huggingface_hub`.
"""

import json
import os

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.utils import cached_file, logging

from .compat_xgenmm import build_sub_configs, sub_config_specs


logger = logging.get_logger(__name__)

# google/siglip-so400m-patch14-384 vision tower. The attention-pooling head exists in the released checkpoints but
# xGen-MM never uses its output, so the default tower is built without it (`vision_use_head=False`).
SIGLIP_SO400M_PATCH14_384 = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": False,
}

# Phi-3-mini as used by xGen-MM v1.5: the 32012 original ids plus the three added tokens merged into one
# 32015-row vocabulary (ids 32015..32063 of Phi-3's table are never produced by the released models).
PHI3_MINI_XGENMM = {
    "vocab_size": 32015,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "original_max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "sliding_window": 2047,
    "bos_token_id": 1,
    "eos_token_id": 32000,
    "pad_token_id": 32000,
    "tie_word_embeddings": False,
}

# Released any-resolution grids as (height, width) pixels, in the released order (the order breaks ties).
# The original code lists them as (width, height): [[384, 768], [768, 384], [768, 768], [1152, 384], [384, 1152]].
XGENMM_V1_5_GRID_PINPOINTS = [[768, 384], [384, 768], [768, 768], [384, 1152], [1152, 384]]

# Key under which `XGenMMConfig.get_config_dict` hands the `grids` of an original checkpoint's preprocessor_config.json
# to the translation of its config.json: `None` means a base checkpoint, a list of (width, height) an instruct one.
ORIGINAL_PREPROCESSOR_GRIDS = "original_preprocessor_grids"


def _download_kwargs(kwargs: dict) -> dict:
    keys = ("cache_dir", "force_download", "proxies", "token", "local_files_only", "revision", "subfolder")
    return {key: kwargs[key] for key in keys if key in kwargs}


def _with_original_preprocessor_grids(config_dict: dict, name_or_path, download_kwargs: dict) -> dict:
    """`config_dict` with the `grids` of the `preprocessor_config.json` beside it when it is an original Salesforce
    config.json (under `ORIGINAL_PREPROCESSOR_GRIDS`); other configs as they are."""
    if "vision_encoder_config" not in config_dict or ORIGINAL_PREPROCESSOR_GRIDS in config_dict:
        return config_dict
    folder = str(name_or_path)
    if os.path.isfile(folder):
        folder = os.path.dirname(folder)
    preprocessor_file = cached_file(
        folder, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False, **download_kwargs
    )
    if preprocessor_file is None:
        return config_dict
    with open(preprocessor_file, encoding="utf-8") as reader:
        return {**config_dict, ORIGINAL_PREPROCESSOR_GRIDS: json.load(reader).get("grids")}


@strict
class XGenMMPerceiverConfig(PreTrainedConfig):
    r"""
    Configuration of the xGen-MM perceiver resampler: `num_latents` learned queries cross-attend, `depth` times, to
    the vision features of one view (plus themselves), then a biased linear `projection` maps them to the language
    model width.

    Args:
        hidden_size (`int`, defaults to 1152): width of the vision features (and of the latents).
        output_size (`int`, defaults to 3072): width of the language model embeddings.
        depth (`int`, defaults to 6): number of (attention, feed-forward) blocks.
        num_heads (`int`, defaults to 16): attention heads.
        head_dim (`int`, defaults to 96): width of one head; the attention width is `num_heads * head_dim`.
        num_latents (`int`, defaults to 128): output tokens per view.
        ff_mult (`int`, defaults to 4): feed-forward expansion.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities in training.
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser for linear layers.
    """

    model_type = "xgenmm_perceiver"
    base_config_key = "perceiver_config"

    hidden_size: int = 1152
    output_size: int = 3072
    depth: int = 6
    num_heads: int = 16
    head_dim: int = 96
    num_latents: int = 128
    ff_mult: int = 4
    layer_norm_eps: float = 1e-5
    attention_dropout: float | int = 0.0
    initializer_range: float = 0.02


# Each sub-configuration's class, default model type and defaults (`AutoConfig`: any model type, in a dict's
# `model_type`).
SUB_CONFIG_DEFAULTS = {
    "vision_config": (AutoConfig, "siglip_vision_model", SIGLIP_SO400M_PATCH14_384),
    "perceiver_config": (XGenMMPerceiverConfig, XGenMMPerceiverConfig.model_type, {}),
    "text_config": (AutoConfig, "phi3", PHI3_MINI_XGENMM),
}


@strict
class XGenMMConfig(PreTrainedConfig):
    r"""
    Configuration of an xGen-MM (BLIP-3) model. The defaults build the released v1.5 architecture
    (`Salesforce/xgen-mm-phi3-mini-*-r-v1.5`): SigLIP so400m-patch14-384, a 6-layer perceiver resampler with 128
    latents, and Phi-3-mini with a biased 32015-row output head.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Any config `AutoModel.from_config` builds into a vision backbone returning `last_hidden_state`
            (`SiglipVisionConfig` by default, `TimmWrapperConfig` for timm models).
        perceiver_config (`dict` or `XGenMMPerceiverConfig`, *optional*):
            Perceiver resampler settings. Its `hidden_size` follows the vision tower and its `output_size` the
            language model when those are known.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Any causal language model config (Phi-3-mini by default).
        image_token_id (`int`, defaults to 32012):
            Id of `<image>`. The processor writes one such token per image feature vector.
        anyres (`bool`, defaults to `True`):
            Any-resolution mode (instruct models): each image is a squash-resized global view plus the crops of its
            best grid. `False` is the base-model mode: one squash-resized view per image.
        image_grid_pinpoints (`list[list[int]]`, *optional*):
            Any-resolution grids as `(height, width)` in pixels, each a multiple of `image_size`, in priority order
            (the first of equally good grids wins). Defaults to the five released grids.
        image_size (`int`, defaults to 384): side of every view (the global view and each grid crop).
        lm_head_bias (`bool`, defaults to `True`): whether the output head has a bias (the released models do).
    """

    model_type = "xgenmm"
    sub_configs = {key: config_class for key, (config_class, _, _) in SUB_CONFIG_DEFAULTS.items()}
    sub_configs_defaults = sub_config_specs(SUB_CONFIG_DEFAULTS)

    vision_config: dict | PreTrainedConfig | None = None
    perceiver_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32012
    anyres: bool = True
    image_grid_pinpoints: list | None = None
    image_size: int = 384
    lm_head_bias: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if "vision_encoder_config" in kwargs:
            kwargs = self._translate_original_format(kwargs)
        if self.image_grid_pinpoints is None:
            self.image_grid_pinpoints = [list(grid) for grid in XGENMM_V1_5_GRID_PINPOINTS]
        build_sub_configs(self, SUB_CONFIG_DEFAULTS)
        super().__post_init__(**kwargs)
        self._sync_perceiver_widths()

    def _sync_perceiver_widths(self):
        vision_width = getattr(self.vision_config, "hidden_size", None)
        if vision_width is not None and self.perceiver_config.hidden_size != vision_width:
            self.perceiver_config.hidden_size = vision_width
        text_width = self.text_config.hidden_size
        if self.perceiver_config.output_size != text_width:
            self.perceiver_config.output_size = text_width

    def validate_architecture(self):
        """Part of `@strict` validation: every grid must tile into whole `image_size` crops."""
        if self.anyres and not self.image_grid_pinpoints:
            raise ValueError("anyres=True needs at least one grid in image_grid_pinpoints")
        for grid in self.image_grid_pinpoints:
            if len(grid) != 2 or any(side <= 0 or side % self.image_size for side in grid):
                raise ValueError(
                    f"image_grid_pinpoints entry {grid} is not a (height, width) pair of positive multiples of "
                    f"image_size={self.image_size}"
                )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> tuple[dict, dict]:
        """Also reads the `grids` of the `preprocessor_config.json` next to an original Salesforce config.json: the
        original config says `image_aspect_ratio: anyres` for base and instruct checkpoints alike, and only the image
        processor's grids tell them apart (`null` for the fixed 384x384 base model)."""
        download_kwargs = _download_kwargs(kwargs)
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        return _with_original_preprocessor_grids(config_dict, pretrained_model_name_or_path, download_kwargs), kwargs

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """`AutoConfig` (and so every Auto model class) reads config.json itself and hands the dict here, with the
        folder or repo id as `name_or_path`: an original checkpoint's preprocessor grids are read from there too."""
        if kwargs.get("name_or_path") is not None:
            config_dict = _with_original_preprocessor_grids(
                config_dict, kwargs["name_or_path"], _download_kwargs(kwargs)
            )
        return super().from_dict(config_dict, **kwargs)

    def _translate_original_format(self, kwargs: dict) -> dict:
        """Reads a config.json written by the original Salesforce code (`vision_encoder_config`,
        `vision_tokenizer_config`, a Phi-3 `text_config` with `initial_tokenizer_len`)."""
        encoder = kwargs.pop("vision_encoder_config") or {}
        tokenizer = kwargs.pop("vision_tokenizer_config", None) or {}
        text = dict(self.text_config or {})
        initial_tokenizer_len = text.pop("initial_tokenizer_len", 32012)
        # Ids >= initial_tokenizer_len of the original table are never used: the merged vocabulary is L + 3 rows.
        text["vocab_size"] = initial_tokenizer_len + 3
        text.setdefault("model_type", "phi3")
        text.pop("torch_dtype", None)
        self.text_config = text
        siglip = dict(encoder.get("siglip_vision_config") or SIGLIP_SO400M_PATCH14_384)
        siglip["vision_use_head"] = False
        siglip["model_type"] = "siglip_vision_model"
        self.vision_config = siglip
        self.perceiver_config = {
            "hidden_size": tokenizer.get("vis_feature_dim", siglip.get("hidden_size", 1152)),
            "output_size": tokenizer.get("lang_embedding_dim", text.get("hidden_size", 3072)),
            "num_latents": tokenizer.get("num_vis_tokens", 128),
        }
        self.image_token_id = initial_tokenizer_len
        self.image_size = siglip.get("image_size", 384)
        self.lm_head_bias = True
        if ORIGINAL_PREPROCESSOR_GRIDS in kwargs:
            grids_wh = kwargs.pop(ORIGINAL_PREPROCESSOR_GRIDS)
            self.anyres = grids_wh is not None
            side = self.image_size
            variant = "instruct (any-resolution)" if self.anyres else f"base (fixed {side}x{side} views)"
            logger.warning(
                f"Reading an original Salesforce xGen-MM checkpoint, {variant} per its preprocessor_config.json: "
                "its config and weights are translated into this package's format (renamed keys, merged vocabulary)."
            )
        else:
            grids_wh = encoder.get("anyres_grids")
            self.anyres = encoder.get("image_aspect_ratio", "anyres") == "anyres"
            if self.anyres:
                logger.warning(
                    "Translating an original Salesforce xGen-MM config.json without its preprocessor_config.json: "
                    "assuming an instruct (any-resolution) model, although base checkpoints also say "
                    "image_aspect_ratio='anyres'. XGenMMConfig.from_pretrained(folder) and `xgenmm convert` read the "
                    "preprocessor config and tell them apart."
                )
        if grids_wh:
            self.image_grid_pinpoints = [[height, width] for width, height in grids_wh]
        for key in ("auto_map", "architectures"):
            kwargs.pop(key, None)
        self.architectures = ["XGenMMForConditionalGeneration"]
        return kwargs


__all__ = ["XGenMMConfig", "XGenMMPerceiverConfig"]
