# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The released Salesforce xGen-MM v1.5 checkpoints (original format), mapped onto this package's layout.

| original key (`vlm.` prefix)                             | this package                                      |
|----------------------------------------------------------|---------------------------------------------------|
| `vision_encoder.*`                                       | `model.vision_tower.*`                            |
| `vision_encoder.head.*` (SigLIP pooling head, unused)    | dropped (`_keys_to_ignore_on_load_unexpected`)    |
| `vision_tokenizer.layers.{i}.0.*` (attention)            | `model.resampler.layers.{i}.cross_attn.*`         |
| `vision_tokenizer.layers.{i}.1.{0,1,3}.*` (feed-forward) | `model.resampler.layers.{i}.mlp.{norm,fc1,fc2}.*` |
| `vision_tokenizer.{latents,norm,projection}*`            | `model.resampler.{latents,norm,projection}*`      |
| `lang_model.model.*`                                     | `model.language_model.*`                          |
| `lang_model.model.embed_tokens.weight`                   | `model.language_model.embed_tokens.weight`,       |
|   + `lang_model.model.embed_tokens.additional_embedding.weight` | merged                                     |
| `lang_model.lm_head.{weight,bias}`                       | `lm_head.{weight,bias}`, merged                   |
|   + `lang_model.lm_head.additional_fc.{weight,bias}`     |                                                   |

The original decouples its vocabulary: ids below `L = initial_tokenizer_len` use Phi-3's table (whose rows from `L`
on are never used) and the three added tokens (`<image>`, `<image placeholder>`, `<|endofchunk|>`) a 3-row table;
the output head likewise. Both are merged here into one `L + 3`-row table and one biased `L + 3`-row head.

One list of transforms, `original_checkpoint_conversion`, drives both ways of reading such a checkpoint: it is
registered with transformers' load-only ("legacy") checkpoint conversions, so `from_pretrained(original_folder)`
renames and merges on load, and `plan_original_weights` applies the same registered transforms, through
transformers' own renaming, for the streaming converter (`convert.py`, `xgenmm convert`).
"""

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from copy import deepcopy
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    get_model_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.core_model_loading import (
    ConversionOps,
    WeightConverter,
    WeightRenaming,
    WeightTransform,
    dot_natural_key,
    rename_source_key,
)

from ..configuration_xgenmm import XGenMMConfig


class OriginalCheckpointError(ValueError):
    """An original xGen-MM checkpoint that cannot be converted, or a folder that is not one."""


class MergeDecoupledVocabulary(ConversionOps):
    """Merges a decoupled table: the first `L` rows of the original table, then the rows of the added tokens.

    `L` is the merged parameter's row count minus the added rows, so the same operation serves the embeddings, the
    head's weight and the head's bias of any vocabulary size. Used on load only: it has no reverse.
    """

    @torch.no_grad
    def convert(
        self,
        input_dict: dict[str, list[torch.Tensor]],
        source_patterns: list[str],
        target_patterns: list[str],
        full_layer_name: str,
        model: PreTrainedModel,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        original_pattern, added_pattern = source_patterns
        missing = [pattern for pattern in source_patterns if pattern not in input_dict]
        if missing:
            raise OriginalCheckpointError(
                f"{full_layer_name} is merged from {source_patterns}, but {missing} is absent"
            )
        original, added = (next(iter(input_dict[pattern])) for pattern in (original_pattern, added_pattern))
        kept_rows = model.get_parameter(full_layer_name).shape[0] - added.shape[0]
        if not 0 < kept_rows <= original.shape[0]:
            raise OriginalCheckpointError(
                f"{full_layer_name} needs {kept_rows} rows of the original table, which has {original.shape[0]}"
            )
        # Keyed by the parameter's full name, which holds whether or not the model has the `model.` prefix.
        return {full_layer_name: torch.cat([original[:kept_rows], added])}


class OriginalKeyRenaming(WeightRenaming):
    """A renaming of original keys, applied on load only.

    `save_pretrained` reverses the transforms a model was loaded with; this package always saves its own layout, so
    the reverse is the transform itself, whose `^vlm.` patterns never match this package's names.
    """

    __slots__ = ()

    def reverse_transform(self) -> WeightTransform:
        return self


class OriginalWeightConverter(WeightConverter):
    """A conversion of original tensors, applied on load only (see `OriginalKeyRenaming`)."""

    __slots__ = ()

    def reverse_transform(self) -> WeightTransform:
        return self


def original_checkpoint_conversion() -> list[WeightTransform]:
    """The transforms from the original key layout to this package's, in transformers' conversion-mapping format.

    Renamings run first (in order, chained), then at most one converter per key; every pattern is anchored on the
    original `vlm.` prefix, so this package's own checkpoints pass through untouched.
    """
    perceiver_layer = r"^vlm\.vision_tokenizer\.layers\.(\d+)\."
    vocabulary = [MergeDecoupledVocabulary()]
    return [
        OriginalKeyRenaming(r"^vlm\.vision_encoder\.", "model.vision_tower."),
        OriginalKeyRenaming(perceiver_layer + r"0\.", r"model.resampler.layers.\1.cross_attn."),
        OriginalKeyRenaming(perceiver_layer + r"1\.0\.", r"model.resampler.layers.\1.mlp.norm."),
        OriginalKeyRenaming(perceiver_layer + r"1\.1\.", r"model.resampler.layers.\1.mlp.fc1."),
        OriginalKeyRenaming(perceiver_layer + r"1\.3\.", r"model.resampler.layers.\1.mlp.fc2."),
        OriginalKeyRenaming(r"^vlm\.vision_tokenizer\.", "model.resampler."),
        # The embedding table is merged by a converter below, which must see its original names.
        OriginalKeyRenaming(r"^vlm\.lang_model\.model\.(?!embed_tokens\.)", "model.language_model."),
        OriginalWeightConverter(
            [
                r"^vlm\.lang_model\.model\.embed_tokens\.weight",
                r"^vlm\.lang_model\.model\.embed_tokens\.additional_embedding\.weight",
            ],
            "model.language_model.embed_tokens.weight",
            operations=vocabulary,
        ),
        OriginalWeightConverter(
            [r"^vlm\.lang_model\.lm_head\.weight", r"^vlm\.lang_model\.lm_head\.additional_fc\.weight"],
            "lm_head.weight",
            operations=vocabulary,
        ),
        OriginalWeightConverter(
            [r"^vlm\.lang_model\.lm_head\.bias", r"^vlm\.lang_model\.lm_head\.additional_fc\.bias"],
            "lm_head.bias",
            operations=vocabulary,
        ),
    ]


def register_original_checkpoint_conversion() -> None:
    """Idempotent: makes `from_pretrained` read original checkpoints, and only read them.

    The transforms join transformers' "legacy" conversions, which `from_pretrained` applies to every checkpoint it
    loads but `save_pretrained` never reverses: a model saves in this package's layout whatever it was loaded from
    (a mapping registered for the model type would be read as the serialized format, and reversed on every save).
    Every pattern is anchored on the original `vlm.` prefix, so no other checkpoint is touched.
    """
    legacy = get_checkpoint_conversion_mapping("legacy") or []
    ours = (OriginalKeyRenaming, OriginalWeightConverter)
    kept = [transform for transform in legacy if not isinstance(transform, ours)]
    register_checkpoint_conversion_mapping("legacy", kept + original_checkpoint_conversion(), overwrite=True)


def is_original_config(config_dict: dict) -> bool:
    """Whether a config.json was written by the original Salesforce code."""
    return config_dict.get("model_type") == XGenMMConfig.model_type and "vision_encoder_config" in config_dict


@dataclass
class OriginalWeightPlan:
    """Where every tensor of an original checkpoint goes in a model.

    `sources` maps each model parameter to the `(original key, source pattern)` pairs it is built from, `transforms`
    to the transform that builds it, and `dropped` lists the original keys the model declares unused.
    """

    sources: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    transforms: dict[str, WeightTransform] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def source_keys(self, parameter: str) -> list[str]:
        return [key for key, _ in self.sources[parameter]]

    def build(self, parameter: str, read: Callable[[str], torch.Tensor], model: PreTrainedModel) -> torch.Tensor:
        """Reads the original tensors of `parameter` with `read(original_key)` and applies its transform, exactly as
        `from_pretrained` does (transformers calls such deferred readers when it loads without threads)."""
        transform = deepcopy(self.transforms[parameter])
        for key, pattern in self.sources[parameter]:
            transform.add_tensor(parameter, key, pattern, lambda key=key: read(key))
        built = transform.convert(parameter, model=model, config=model.config)
        tensor = built[parameter]
        return tensor[0] if isinstance(tensor, list) else tensor

    def check_shapes(self, original_shapes: dict[str, tuple[int, ...]], model: PreTrainedModel) -> None:
        """Runs every transform on meta tensors of the original shapes, and raises `OriginalCheckpointError` if a
        result disagrees with the model built from the config: nothing is read or written first."""
        mismatched = []
        for name, expected in model.state_dict().items():
            built = self.build(name, lambda key: torch.empty(original_shapes[key], device="meta"), model)
            if built.shape != expected.shape:
                mismatched.append(
                    f"{name} is {tuple(built.shape)} from {self.source_keys(name)} but the config.json makes it "
                    f"{tuple(expected.shape)}"
                )
        if mismatched:
            raise OriginalCheckpointError(
                f"{len(mismatched)} original weights disagree with the config.json: {mismatched[:10]}"
            )


def plan_original_weights(original_keys: Iterable[str], model: PreTrainedModel) -> OriginalWeightPlan:
    """Maps original checkpoint keys onto `model`'s parameters with the transforms `from_pretrained` would use.

    Raises `OriginalCheckpointError` for original keys that go nowhere, for parameters without a source, and for
    merged parameters whose sources are incomplete.
    """
    weight_mapping = get_model_conversion_mapping(model)
    renamings = [transform for transform in weight_mapping if isinstance(transform, WeightRenaming)]
    converters = [transform for transform in weight_mapping if isinstance(transform, WeightConverter)]
    pattern_to_converter = {pattern: converter for converter in converters for pattern in converter.source_patterns}
    parameters = model.state_dict()
    ignored = re.compile("|".join(model._keys_to_ignore_on_load_unexpected or ["(?!)"]))

    plan, unexpected = OriginalWeightPlan(), []
    for key in sorted(original_keys, key=dot_natural_key):
        target, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, parameters)
        if target in parameters:
            if pattern is None:
                transform, pattern = WeightRenaming(key, target), key
            else:
                transform = deepcopy(pattern_to_converter[pattern])
            plan.transforms.setdefault(target, transform)
            plan.sources[target].append((key, pattern))
        elif ignored.search(target):
            plan.dropped.append(key)
        else:
            unexpected.append(key)
    if unexpected:
        raise OriginalCheckpointError(
            f"{len(unexpected)} tensors of the original checkpoint match no parameter of {type(model).__name__} "
            f"(is the config.json from the same checkpoint?): {unexpected[:10]}"
        )

    missing = [name for name in parameters if name not in plan.transforms]
    for name, transform in plan.transforms.items():
        found = {pattern for _, pattern in plan.sources[name]}
        if isinstance(transform, WeightConverter) and found != set(transform.source_patterns):
            missing.append(f"{name} (merged from {transform.source_patterns}; found only {sorted(found)})")
    if missing:
        raise OriginalCheckpointError(
            f"the original checkpoint lacks the weights of {len(missing)} parameters: {missing[:10]}"
        )
    return plan


__all__ = [
    "MergeDecoupledVocabulary",
    "OriginalCheckpointError",
    "OriginalWeightPlan",
    "is_original_config",
    "original_checkpoint_conversion",
    "plan_original_weights",
    "register_original_checkpoint_conversion",
]
