# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""PyTorch xGen-MM (BLIP-3).

Data flow: every view of every image goes through the vision tower in one pass; any-resolution views are regrouped
exactly as the released models expect; one batched perceiver-resampler pass turns each group into `num_latents`
vectors in the language model's width; those vectors replace the `<image>` tokens of the text; the causal language
model and a (biased) head produce logits.

This file is copied verbatim into every Hub folder, so it imports only torch, `transformers` and its sibling
configuration file.
"""

import copy
from collections.abc import Callable
from functools import lru_cache
from math import isqrt

import torch
from torch import nn
from transformers import AutoModel, CompileConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.image_processing_utils import select_best_resolution
from transformers.masking_utils import create_bidirectional_mask, find_packed_sequence_indices
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple

from .compat_xgenmm import (
    CACHE_ARG,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
    get_cache,
    slice_logits_to_keep,
    takes_cache_argument,
)
from .configuration_xgenmm import XGenMMConfig, XGenMMPerceiverConfig


logger = logging.get_logger(__name__)


def image_grid_shape(image_size: tuple[int, int], grid_pinpoints: list, view_size: int) -> tuple[int, int]:
    """(rows, columns) of `view_size` crops in the best any-resolution grid for an image of (height, width).

    The grid rule has one owner, transformers' `select_best_resolution`, which the image processor uses too.
    """
    best_height, best_width = select_best_resolution(tuple(image_size), grid_pinpoints)
    return best_height // view_size, best_width // view_size


def num_image_views(image_size: tuple[int, int], config: XGenMMConfig) -> int:
    """Views the processor makes for one image: the global view, plus the grid crops in any-resolution mode."""
    if not config.anyres:
        return 1
    rows, cols = image_grid_shape(image_size, config.image_grid_pinpoints, config.image_size)
    return 1 + rows * cols


@lru_cache(maxsize=64)
def stitched_raster_index(rows: int, cols: int, side: int) -> torch.Tensor:
    """Index into the flat features of `rows * cols` crop views (`side * side` features each, row-major crops) that
    reads the stitched `(rows * side) x (cols * side)` feature map in raster order."""
    row = torch.arange(rows * side).view(-1, 1)
    col = torch.arange(cols * side).view(1, -1)
    crop = (row // side) * cols + col // side
    within = (row % side) * side + col % side
    return (crop * side * side + within).flatten()


def unpad_mask(image_size: tuple[int, int], map_height: int, map_width: int) -> torch.Tensor:
    """1/0 mask over a stitched feature map: 0 on the rows or columns that only hold the black padding added when
    the image of (height, width) was fitted into its grid. Reproduces the released models' rule, which uses `int`
    truncation (LLaVA-NeXT rounds instead)."""
    height, width = image_size
    mask = torch.ones(map_height, map_width)
    if width / height > map_width / map_height:
        padding = (map_height - int(height * (map_width / width))) // 2
        if padding > 0:
            mask[:padding] = 0
            mask[map_height - padding :] = 0
    else:
        padding = (map_width - int(width * (map_height / height))) // 2
        if padding > 0:
            mask[:, :padding] = 0
            mask[:, map_width - padding :] = 0
    return mask


def compile_everywhere(generation_config, kwargs: dict) -> None:
    """Sets `kwargs["compile_config"]` to the generation's compile config marked to compile on every device, when
    `generate(**kwargs)` decodes with a static cache and compiles (its `disable_compile` unset), unless the compile
    config says where it compiles already (`_compile_all_devices`, transformers' switch for CPUs)."""
    static = kwargs.get("cache_implementation", generation_config.cache_implementation) == "static"
    if not static or kwargs.get("disable_compile", generation_config.disable_compile):
        return
    compile_config = kwargs.get("compile_config", generation_config.compile_config)
    if compile_config is not None and compile_config._compile_all_devices is not None:
        return
    compile_config = copy.copy(compile_config) if compile_config is not None else CompileConfig()
    compile_config._compile_all_devices = True
    kwargs["compile_config"] = compile_config


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class XGenMMPerceiverAttention(nn.Module):
    """Latents attend to [vision features; latents] (keys/values), bidirectionally, with a key padding mask."""

    def __init__(self, config: XGenMMPerceiverConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.scaling = config.head_dim**-0.5
        self.is_causal = False
        inner_dim = config.num_heads * config.head_dim
        self.norm_media = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.norm_latents = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.to_q = nn.Linear(config.hidden_size, inner_dim, bias=False)
        self.to_kv = nn.Linear(config.hidden_size, 2 * inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, config.hidden_size, bias=False)

    def forward(
        self, latents: torch.Tensor, media: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """latents: (groups, num_latents, dim); media: (groups, num_features, dim);
        attention_mask: (groups, 1, num_latents, num_features + num_latents) in the attention backend's format."""
        batch, num_latents, _ = latents.shape
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        query = self.to_q(latents).view(batch, num_latents, self.num_heads, self.head_dim).transpose(1, 2)
        key, value = self.to_kv(torch.cat([media, latents], dim=1)).chunk(2, dim=-1)
        key = key.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)
        value = value.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.config.attention_dropout if self.training else 0.0,
            is_causal=False,
            **kwargs,
        )
        return self.to_out(attn_output.reshape(batch, num_latents, -1))


class XGenMMPerceiverMLP(nn.Module):
    def __init__(self, config: XGenMMPerceiverConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.hidden_size * config.ff_mult, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.hidden_size * config.ff_mult, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(hidden_states))))


class XGenMMPerceiverLayer(GradientCheckpointingLayer):
    def __init__(self, config: XGenMMPerceiverConfig):
        super().__init__()
        self.cross_attn = XGenMMPerceiverAttention(config)
        self.mlp = XGenMMPerceiverMLP(config)

    def forward(
        self, latents: torch.Tensor, media: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        latents = latents + self.cross_attn(latents, media, attention_mask, **kwargs)
        return latents + self.mlp(latents)


class XGenMMPreTrainedModel(PreTrainedModel):
    config: XGenMMConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["XGenMMPerceiverLayer"]
    _skip_keys_device_placement = [CACHE_ARG]
    # The vision tower is built without SigLIP's attention-pooling head, whose output xGen-MM never uses; checkpoints
    # that carry it (the original Salesforce ones, full SigLIP towers) load without it.
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)vision_tower\.head\."]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, XGenMMPerceiverResampler):
            init.normal_(module.latents, mean=0.0, std=1.0)

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: like the library's own models, every `_init_weights` here writes through
        `transformers.initialization` (which marks what it initialised). For custom code transformers assumes otherwise
        and skips the modules without parameters of their own when it initialises missing weights, which would skip
        the sub-models' initialisation done one level above their linear layers (SigLIP's attention and MLP): a
        checkpoint missing such a weight would load it with another distribution than a model built from its
        config."""
        return False

    def post_init(self):
        super().post_init()
        # `post_init` gathers the sub-models' `_no_split_modules`, which name classes this model never builds (SigLIP's
        # text embeddings and pooling head); FSDP's auto-wrap (accelerate reads the list) refuses names it cannot find.
        self._no_split_modules &= {type(module).__name__ for module in self.modules()}

    def save_pretrained(self, save_directory, *args, **kwargs):
        # FSDP2's `fully_shard` swaps in a subclass defined by torch, whose files `save_pretrained` would copy and
        # name in `auto_map`; the folder needs this file and its class.
        defined_here = next(cls for cls in type(self).__mro__ if cls.__module__ == __name__)
        if defined_here is not type(self):
            wrapped, self.__class__ = self.__class__, defined_here
            try:
                return self.save_pretrained(save_directory, *args, **kwargs)
            finally:
                self.__class__ = wrapped
        # `register_for_auto_class` records one Auto class per class; a Hub folder should answer all of them.
        if self._auto_class is not None:
            module = self.__class__.__module__.split(".")[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoConfig": f"{XGenMMConfig.__module__.split('.')[-1]}.XGenMMConfig",
                "AutoModel": f"{module}.XGenMMModel",
                "AutoModelForCausalLM": f"{module}.XGenMMForConditionalGeneration",
                "AutoModelForImageTextToText": f"{module}.XGenMMForConditionalGeneration",
            }
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        except ValueError as error:
            # torchao's safetensors writer knows some of its weight types only, and names the one it met
            if getattr(self, "hf_quantizer", None) is None or "Unsupported tensor type" not in str(error):
                raise
            raise ValueError(
                f"this quantized model cannot be saved: {error}; torchao writes no safetensors for that weight type "
                "(its CPU int4 layout, Int4OpaqueTensor, among them). Save the model unquantized and pass the "
                "quantization_config when loading it."
            ) from error


class XGenMMPerceiverResampler(XGenMMPreTrainedModel):
    """Perceiver resampler: `num_latents` learned queries read one group of vision features each; a final LayerNorm
    and a biased linear `projection` (the only vision-to-language connector) map them to the LM width."""

    config: XGenMMPerceiverConfig
    input_modalities = ("image",)

    def __init__(self, config: XGenMMPerceiverConfig):
        super().__init__(config)
        self.latents = nn.Parameter(torch.empty(config.num_latents, config.hidden_size))
        self.layers = nn.ModuleList([XGenMMPerceiverLayer(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.hidden_size, config.output_size, bias=True)
        self.post_init()

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """
        features (`torch.Tensor` of shape `(groups, num_features, hidden_size)`): vision features, one group per row.
        attention_mask (`torch.Tensor` of shape `(groups, num_features)`, *optional*): 1 for features to attend to.

        Returns `(groups, num_latents, output_size)`.
        """
        latents = self.latents.unsqueeze(0).expand(features.shape[0], -1, -1)
        if attention_mask is not None:
            # The latents are keys too, and always visible.
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(latents.shape[:2])], dim=1)
            attention_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=latents, attention_mask=attention_mask
            )
        for layer in self.layers:
            latents = layer(latents, features, attention_mask, **kwargs)
        return self.projection(self.norm(latents))


class XGenMMModel(XGenMMPreTrainedModel):
    """xGen-MM backbone: vision tower, perceiver resampler and language model, without the output head."""

    def __init__(self, config: XGenMMConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        # timm configs do not state their feature width; the built backbone does.
        timm_width = getattr(getattr(self.vision_tower, "timm_model", None), "num_features", None)
        if timm_width is not None and config.perceiver_config.hidden_size != timm_width:
            logger.info(f"Setting perceiver_config.hidden_size to the timm backbone's feature width {timm_width}")
            config.perceiver_config.hidden_size = timm_width
        self.resampler = XGenMMPerceiverResampler._from_config(config.perceiver_config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def train(self, mode: bool = True):
        """Sets training mode, except on a frozen vision tower (no parameter requiring grad), which stays in eval mode
        as in the released recipe: training the resampler and LM must not update the batch-norm statistics of a
        frozen convolutional tower, nor drop out its features."""
        super().train(mode)
        if mode and not any(param.requires_grad for param in self.vision_tower.parameters()):
            self.vision_tower.eval()
        return self

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def views_per_image(self, image_sizes: torch.Tensor | list | None, pixel_values: torch.Tensor) -> list[int]:
        """Number of views of each image, from the images' (height, width) and the grid rule, checked against the
        layout of `pixel_values`: one row per image `(images, max_views, ...)`, or every view flattened
        `(views, ...)`."""
        per_image = pixel_values.dim() == 5
        if not self.config.anyres:
            return [1] * pixel_values.shape[0]
        if image_sizes is None:
            raise ValueError(
                "image_sizes (one (height, width) per image) is required in any-resolution mode to know which views "
                "in pixel_values belong to which image; the processor returns it with pixel_values."
            )
        sizes = image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else list(image_sizes)
        for index, size in enumerate(sizes):
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(
                    f"image_sizes[{index}] is {size}; every image's size is a (height, width) pair of positive "
                    "numbers, as the processor returns it"
                )
        counts = [num_image_views(size, self.config) for size in sizes]
        if per_image and (len(counts) != pixel_values.shape[0] or max(counts, default=0) > pixel_values.shape[1]):
            raise ValueError(
                f"pixel_values holds {pixel_values.shape[0]} images of up to {pixel_values.shape[1]} views but "
                f"image_sizes describes {len(sizes)} images that need {counts} views under "
                f"image_grid_pinpoints={self.config.image_grid_pinpoints}"
            )
        if not per_image and sum(counts) != pixel_values.shape[0]:
            raise ValueError(
                f"pixel_values holds {pixel_values.shape[0]} views but image_sizes describes {len(sizes)} images that "
                f"need {sum(counts)} views ({counts}) under image_grid_pinpoints={self.config.image_grid_pinpoints}"
            )
        return counts

    def images_after_cache(
        self, input_ids: torch.Tensor, cached: int, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> dict:
        """`pixel_values` and `image_sizes` without the images whose tokens lie in the first `cached` positions of
        `input_ids`, when they hold every image of `input_ids` (row after row, in order); as they are otherwise (the
        images after the cache alone, or a mismatch that the forward reports). Neither when the cache holds every
        image."""
        views = self.views_per_image(image_sizes, pixel_values)
        tokens = [count * self.config.perceiver_config.num_latents for count in views]
        is_image = input_ids == self.config.image_token_id
        if sum(tokens) != int(is_image.sum()):
            return {"pixel_values": pixel_values, "image_sizes": image_sizes}
        keep, image = [], 0
        for row in is_image:
            in_cache, seen = int(row[:cached].sum()), 0
            while seen < int(row.sum()):
                if seen < in_cache < seen + tokens[image]:
                    raise ValueError(
                        f"the cache ({cached} positions) ends inside the tokens of image {image}; continue a "
                        "conversation from a cache that holds whole images"
                    )
                keep.append(seen >= in_cache)
                seen, image = seen + tokens[image], image + 1
        if not any(keep):
            return {}
        if pixel_values.dim() == 5:
            pixel_values = pixel_values[torch.tensor(keep, device=pixel_values.device)]
        else:
            pixel_values = torch.cat([image for image, kept in zip(pixel_values.split(views), keep) if kept])
        if image_sizes is not None:
            image_sizes = torch.as_tensor(image_sizes)
            image_sizes = image_sizes[torch.tensor(keep, device=image_sizes.device)]
        return {"pixel_values": pixel_values, "image_sizes": image_sizes}

    @staticmethod
    def real_views(pixel_values: torch.Tensor, views: list[int]) -> torch.Tensor:
        """The views of every image, flattened `(views, channels, height, width)`, from either layout: the zero views
        that pad an image's row are left out, so the tower never encodes them."""
        if pixel_values.dim() == 4:
            return pixel_values
        if all(count == pixel_values.shape[1] for count in views):
            return pixel_values.flatten(0, 1)
        return torch.cat([row[:count] for row, count in zip(pixel_values, views)])

    def encode_views(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]):
        """Runs the vision tower once over all views: `(views, channels, height, width)` -> the tower's output, with
        `last_hidden_state` `(views, N, dim)` (convolutional maps flattened, prefix tokens dropped)."""
        pixel_values = pixel_values.to(dtype=self.vision_tower.dtype)
        outputs = self.vision_tower(pixel_values=pixel_values, **kwargs)
        features = outputs.last_hidden_state
        if features.dim() == 4:  # convolutional timm backbones return (views, dim, height, width)
            features = features.flatten(2).transpose(1, 2)
        num_prefix_tokens = getattr(getattr(self.vision_tower, "timm_model", None), "num_prefix_tokens", 0)
        outputs.last_hidden_state = features[:, num_prefix_tokens:]
        return outputs

    def regroup_anyres(
        self, features: torch.Tensor, image_sizes: list, views: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Regroups the crop features of each image as the released models do, and builds the padding mask.

        The crops of one image are stitched into a `(rows * side) x (cols * side)` map and cut back into groups of
        `side * side` consecutive features in the map's raster order, so for grids wider than one crop a group is a
        horizontal stripe that mixes crops. The perceiver has no positions: only group membership and the mask
        matter, and both follow the released code. The global view keeps its features and an all-ones mask.
        """
        num_views, num_features, dim = features.shape
        side = isqrt(num_features)
        if side * side != num_features:
            raise ValueError(
                f"any-resolution mode stitches square feature maps, but the vision tower returns {num_features} "
                "features per view; use anyres=False for this backbone"
            )
        index_parts, mask_parts, first_view = [], [], 0
        for size, count in zip(image_sizes, views):
            rows, cols = image_grid_shape(size, self.config.image_grid_pinpoints, self.config.image_size)
            index_parts.append(torch.arange(num_features) + first_view * num_features)
            index_parts.append(stitched_raster_index(rows, cols, side) + (first_view + 1) * num_features)
            mask_parts.append(torch.ones(num_features))
            mask_parts.append(unpad_mask(size, rows * side, cols * side).flatten())
            first_view += count
        index = torch.cat(index_parts).to(features.device)
        grouped = features.reshape(num_views * num_features, dim)[index].view(num_views, num_features, dim)
        mask = torch.cat(mask_parts).view(num_views, num_features)
        return grouped, None if bool(mask.all()) else mask.to(device=features.device, dtype=torch.long)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """
        pixel_values (`torch.Tensor` of shape `(images, max_views, channels, image_size, image_size)`):
            The views of each image in its row (global view first, then row-major crops), zero views after them, as
            the processor returns them; `(views, channels, image_size, image_size)` with every view flattened, image
            after image, is read too.
        image_sizes (`torch.Tensor` of shape `(images, 2)`, *optional*):
            Original (height, width) of each image; required in any-resolution mode.

        Returns a `BaseModelOutputWithPooling` whose `pooler_output` is a tuple with one
        `(views_of_image * num_latents, text_hidden_size)` tensor per image, in the order of the `<image>` tokens;
        `last_hidden_state` holds the tower's features per view, and `hidden_states` / `attentions` the tower's when
        asked for (`output_hidden_states=True` / `output_attentions=True`).
        """
        if pixel_values is None:
            raise ValueError("get_image_features needs pixel_values, the processor's views of the images; got None")
        if pixel_values.dim() not in (4, 5):
            raise ValueError(
                "pixel_values must be (images, max_views, channels, height, width), one row per image as the "
                "processor returns it, or (views, channels, height, width) with every view of every image; got shape "
                f"{tuple(pixel_values.shape)}"
            )
        if not torch.is_floating_point(pixel_values):
            raise ValueError(
                f"pixel_values are {pixel_values.dtype}; expected the processor's normalised floating-point views "
                "(raw 0-255 pixels would be read as values 255 times too large)"
            )
        side = self.config.image_size
        if tuple(pixel_values.shape[-2:]) != (side, side):
            raise ValueError(
                f"pixel_values hold views of {pixel_values.shape[-2]}x{pixel_values.shape[-1]} pixels, but this model "
                f"sees {side}x{side} views (config.image_size); process the images with this model's processor"
            )
        views = self.views_per_image(image_sizes, pixel_values)
        vision_outputs = self.encode_views(self.real_views(pixel_values, views), **kwargs)
        features = vision_outputs.last_hidden_state
        groups, mask = features, None
        if self.config.anyres:
            sizes = image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else list(image_sizes)
            groups, mask = self.regroup_anyres(features, sizes, views)
        groups = groups.to(self.resampler.dtype)
        image_tokens = self.resampler(groups, mask)
        per_image = image_tokens.flatten(0, 1).split([count * image_tokens.shape[1] for count in views])
        return BaseModelOutputWithPooling(
            last_hidden_state=features,
            pooler_output=per_image,
            hidden_states=getattr(vision_outputs, "hidden_states", None),
            attentions=getattr(vision_outputs, "attentions", None),
        )

    def get_placeholder_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, num_features: int):
        """Boolean `(batch, seq, 1)` mask of the `<image>` positions, checked against the number of image features."""
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
            )
            special_image_mask = (inputs_embeds == image_embedding).all(-1)
        else:
            special_image_mask = input_ids == self.config.image_token_id
        num_tokens = int(special_image_mask.sum())
        if num_tokens != num_features:
            raise ValueError(
                f"Image features and image tokens do not match: the text holds {num_tokens} image tokens "
                f"(id {self.config.image_token_id}) but the images produce {num_features} features. Build inputs "
                "with the XGenMM processor, which expands each <image> to exactly the model's feature count."
            )
        return special_image_mask.unsqueeze(-1)

    def has_packed_rows(self, attention_mask, position_ids, cache) -> bool:
        """Whether the inputs are packed rows: `position_ids` restarting within a row, no `attention_mask`, no cache
        (padding-free training, and every batch of a serving engine). They stay apart only in attention that
        transformers masks per row (eager, sdpa, flex), that runs per row (flash), or that an engine runs per
        sequence itself (vLLM's `vllm`, transformers' `paged|...`); raises for any other, which would let them see
        each other."""
        if attention_mask is not None or cache is not None or position_ids is None or position_ids.dim() != 2:
            return False
        if find_packed_sequence_indices(position_ids) is None:
            return False
        implementation = self.language_model.config._attn_implementation or "eager"
        keeps_rows_apart = (
            implementation in ("eager", "sdpa", "flex_attention", "vllm")
            or "flash" in implementation
            or implementation.startswith("paged")
        )
        if not keeps_rows_apart:
            raise ValueError(
                "position_ids restart within a row without an attention_mask (packed rows), but the language model's "
                f"attention {implementation!r} cannot keep packed rows apart; use eager, sdpa, flex_attention or "
                "flash attention, or padded batches"
            )
        return True

    @can_return_tuple
    @takes_cache_argument
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MultimodalBaseModelOutputWithPast:
        r"""
        pixel_values (`torch.Tensor` of shape `(images, max_views, channels, image_size, image_size)`, *optional*):
            The views of each image, one row per image (see `get_image_features`).
        image_sizes (`torch.LongTensor` of shape `(images, 2)`, *optional*):
            Original (height, width) of each image.
        mm_encoder_outputs (`dict`, *optional*):
            Pre-computed `{"image": get_image_features(...)}`; `generate` encodes images once, before prefill.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if (input_ids if input_ids is not None else inputs_embeds).shape[1] == 0:
            raise ValueError("the input holds no token (an empty prompt); give at least one token per sequence")
        if pixel_values is not None and mm_encoder_outputs is not None:
            raise ValueError("Pass either pixel_values or mm_encoder_outputs, not both")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_outputs = (mm_encoder_outputs or {}).get("image")
        if image_outputs is None and pixel_values is not None and pixel_values.shape[0] > 0:
            image_outputs = self.get_image_features(pixel_values, image_sizes)
        if image_outputs is not None:
            image_features = torch.cat(image_outputs.pooler_output).to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features.shape[0])
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features)
        elif (
            input_ids is not None
            and not torch.compiler.is_compiling()
            and (cache is None or cache.get_seq_length() == 0)
            and bool((input_ids == self.config.image_token_id).any())
        ):
            # As in-library VLMs, image tokens without images are read as text: assisted decoding and prompt lookup
            # hand the prompt's tokens to a second forward without its images on purpose. A caller who forgot the
            # images is told once. Not checked in compiled decoding steps (a prompt is not one), where reading the
            # cache's length would make every step a new graph.
            logger.warning_once(
                "input_ids hold image tokens but no pixel_values were given: the tokens are read as text. Pass "
                "the processor's pixel_values and image_sizes to give the model the images."
            )

        if self.has_packed_rows(attention_mask, position_ids, cache):
            use_cache = False  # transformers keeps packed rows apart only when it builds no cache

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{CACHE_ARG: cache},
            **kwargs,
        )
        return MultimodalBaseModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_ARG: get_cache(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
        )


class XGenMMForConditionalGeneration(XGenMMPreTrainedModel, GenerationMixin):
    """xGen-MM with its output head: `generate`, training losses, and the Auto-class entry point."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: XGenMMConfig):
        super().__init__(config)
        self.model = XGenMMModel(config)
        text_config = config.text_config
        self.lm_head = nn.Linear(text_config.hidden_size, text_config.vocab_size, bias=config.lm_head_bias)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, image_sizes, **kwargs)

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate`, for conversations that go on and prompts that forget their images.

        A conversation continued from an earlier turn's cache (`cache`, `past_key_values` before transformers 5.24)
        may pass the images of the whole conversation, as `apply_chat_template` returns them: the images whose tokens
        the cache already holds are left out before anything is encoded; or only the images after the cache.

        A prompt whose image tokens after the cache come without images is refused: the forward reads such tokens as
        text (for the assistant of assisted decoding, which gets them without images on purpose), so a prompt whose
        `pixel_values` were forgotten would otherwise give a plausible answer about no image. With `inputs_embeds`,
        the caller built the embeddings (images included) and nothing is checked.

        A static cache (`cache_implementation="static"`) compiles the decoding forward on every device, with the
        generation config's `compile_config` (`CompileConfig()` by default; `disable_compile=True` decodes
        uncompiled): transformers compiles on accelerators only unless a compile config says `_compile_all_devices`,
        and on a CPU compiled decoding is faster too (README, "Quantized and compiled inference")."""
        config = generation_config if generation_config is not None else self.generation_config
        compile_everywhere(config, kwargs)
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        # A text-only call may name its images None (pipelines do); transformers would hand None to the image encoder.
        for key in ("pixel_values", "image_sizes"):
            if key in kwargs and kwargs[key] is None:
                del kwargs[key]
        if input_ids is None or kwargs.get("inputs_embeds") is not None or getattr(config, "is_assistant", False):
            return super().generate(inputs, generation_config, **kwargs)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cached = cache.get_seq_length() if cache is not None else 0
        if cached and kwargs.get("pixel_values") is not None:
            images = self.model.images_after_cache(
                input_ids, cached, kwargs.pop("pixel_values"), kwargs.pop("image_sizes", None)
            )
            kwargs.update(images)
        if kwargs.get("pixel_values") is None and kwargs.get("mm_encoder_outputs") is None:
            num_image_tokens = int((input_ids[:, cached:] == self.config.image_token_id).sum())
            if num_image_tokens:
                raise ValueError(
                    f"input_ids hold {num_image_tokens} image tokens but no pixel_values were given to generate; pass "
                    "the processor's pixel_values and image_sizes with them"
                )
        return super().generate(inputs, generation_config, **kwargs)

    def prepare_inputs_for_generation(
        self, input_ids, inputs_embeds=None, is_first_iteration: bool | None = False, **kwargs
    ) -> dict:
        """The library's inputs for one step, without pre-computed image features after the prefill: every image token
        is in the cache by then (transformers before 5.18 fed them to every step)."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and model_inputs.get("use_cache", True):
            model_inputs.pop("mm_encoder_outputs", None)
        return model_inputs

    def num_parameters_by_part(self) -> dict[str, int]:
        """Parameters of the vision tower, the resampler, the language model with its head, and all together."""

        def count(module: nn.Module) -> int:
            return sum(parameter.numel() for parameter in module.parameters())

        return {
            "vision_tower": count(self.model.vision_tower),
            "resampler": count(self.model.resampler),
            "language_model": count(self.model.language_model) + count(self.lm_head),
            "total": count(self),
        }

    @can_return_tuple
    @takes_cache_argument
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        skip_logits: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MultimodalCausalLMOutputWithPast:
        r"""
        pixel_values (`torch.Tensor` of shape `(images, max_views, channels, image_size, image_size)`, *optional*):
            The views of each image, one row per image, as the processor returns them (see `get_image_features`).
        image_sizes (`torch.LongTensor` of shape `(images, 2)`, *optional*):
            Original (height, width) of each image.
        labels (`torch.LongTensor` of shape `(batch, seq)`, *optional*):
            Next-token targets aligned with `input_ids` (shifted inside the loss); -100 is ignored. Labels without any
            target give a zero loss.
        skip_logits (`bool`, *optional*):
            Runs the head only on the positions that have a target (next-token label not -100), computes the loss
            from them and returns no logits (`logits=None`), as Liger's fused linear + cross-entropy does: the same
            loss and gradients for a fraction of the head's work and memory when most tokens are image or prompt
            tokens. Defaults to `True` in training mode when `labels` are given (and `logits_to_keep` is 0), else
            `False`; pass `skip_logits=False` to get the logits while training.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        if skip_logits is None:
            all_positions = isinstance(logits_to_keep, int) and logits_to_keep == 0
            skip_logits = self.training and labels is not None and all_positions
        if skip_logits:
            if labels is None:
                raise ValueError("skip_logits=True computes the loss without logits, so it needs labels")
            loss, logits = self.loss_on_labelled_positions(outputs.last_hidden_state, labels, **kwargs), None
        else:
            logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
            loss = None
            if labels is not None and not (labels[..., 1:] != -100).any():
                # No target token (every label -100): a zero loss that still reaches every weight, not the NaN of 0/0.
                loss = logits.sum() * 0.0
            elif labels is not None:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
                )
        return MultimodalCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_ARG: get_cache(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
        )

    def loss_on_labelled_positions(
        self,
        hidden_states: torch.Tensor,
        labels: torch.Tensor,
        shift_labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        """The model's loss (`self.loss_function`, with `num_items_in_batch` when given) from the head's output on
        the positions whose next-token label is not -100 only; `shift_labels` are read as already shifted."""
        if shift_labels is None:
            shift_labels = nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
        shift_labels = shift_labels.to(hidden_states.device)
        labelled = shift_labels != -100
        if not labelled.any():
            # No target token: a zero loss that still reaches every weight, not the NaN of 0 / 0.
            return self.lm_head(hidden_states[:, :1]).sum() * 0.0
        logits = self.lm_head(hidden_states[labelled])
        return self.loss_function(
            logits=logits,
            labels=None,
            shift_labels=shift_labels[labelled],
            vocab_size=self.config.text_config.vocab_size,
            **kwargs,
        )


__all__ = [
    "XGenMMForConditionalGeneration",
    "XGenMMModel",
    "XGenMMPerceiverResampler",
    "XGenMMPreTrainedModel",
]
