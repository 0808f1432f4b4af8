# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""What differs between the transformers releases the Hub code runs on (5.16.1, vLLM's floor, to the newest 5.x), in
one place: the configuration and modeling files import these names and never test a version themselves.

Each difference is detected by the feature, not by a version number (the release that brought it in brackets):
- composite configurations declare their sub-configurations with defaults, `SubConfigSpec` (5.20), which also
  decides what `to_diff_dict` (so config.json) leaves out; older releases only read `sub_configs`;
- `slice_logits_to_keep` (5.21);
- the KV cache is called `cache`, as argument and output field, where it was `past_key_values` (5.24), and the
  multimodal output classes (5.24).

This file is copied verbatim into every Hub folder, so it imports only torch and `transformers`.
"""

import dataclasses
import functools
import inspect

import torch
from transformers import AutoConfig, PreTrainedConfig, configuration_utils, modeling_outputs, modeling_utils
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, ModelOutput
from transformers.utils.deprecation import deprecate_kwarg


def sub_config_specs(defaults: dict[str, tuple]) -> dict:
    """`sub_configs_defaults` for `{key: (config_class, default_model_type, init_kwargs)}` where transformers has
    `SubConfigSpec`, else nothing (`build_sub_configs` builds them either way)."""
    if not hasattr(configuration_utils, "SubConfigSpec"):
        return {}
    return {
        key: configuration_utils.SubConfigSpec(config_class=config_class, model_type=model_type, init_kwargs=kwargs)
        for key, (config_class, model_type, kwargs) in defaults.items()
    }


def build_sub_configs(config: PreTrainedConfig, defaults: dict[str, tuple]) -> None:
    """Replaces each sub-configuration of `config` given as a dict (built as its `model_type`, or the default one) or
    `None` (the defaults) by its configuration object, as newer releases do from `sub_configs_defaults`."""
    for key, (config_class, model_type, init_kwargs) in defaults.items():
        value = getattr(config, key)
        if isinstance(value, PreTrainedConfig):
            continue
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{key} is a dict, a PreTrainedConfig or None; got {type(value).__name__}")
        value = dict(init_kwargs if value is None else value)
        value_type = value.pop("model_type", None) or model_type
        if config_class is AutoConfig:
            setattr(config, key, AutoConfig.for_model(value_type, **value))
        else:
            setattr(config, key, config_class(**value))


# The name transformers gives the KV cache, as an argument of every `forward` (what `generate` passes) and as a field
# of every output (what `generate` reads back).
_OUTPUT_FIELDS = {field.name for field in dataclasses.fields(BaseModelOutputWithPast)}
CACHE_ARG = "cache" if "cache" in _OUTPUT_FIELDS else "past_key_values"


def takes_cache_argument(forward):
    """Decorates a `forward` whose KV cache parameter is called `cache`, so that it also takes the cache under the name
    the installed transformers passes: from 5.24 `cache` (`past_key_values` still taken, deprecated); before,
    `past_key_values`, on every decoding step, which is then taken silently."""
    if CACHE_ARG == "cache":
        return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)

    @functools.wraps(forward)
    def with_past_key_values(*args, past_key_values: Cache | None = None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(*args, **kwargs)

    # `generate` checks the arguments it passes against the signature, so it shows the older name.
    signature = inspect.signature(forward)
    with_past_key_values.__signature__ = signature.replace(
        parameters=[
            parameter.replace(name="past_key_values") if parameter.name == "cache" else parameter
            for parameter in signature.parameters.values()
        ]
    )
    return with_past_key_values


if hasattr(modeling_outputs, "MultimodalCausalLMOutputWithPast"):
    MultimodalBaseModelOutputWithPast = modeling_outputs.MultimodalBaseModelOutputWithPast
    MultimodalCausalLMOutputWithPast = modeling_outputs.MultimodalCausalLMOutputWithPast
else:

    @dataclasses.dataclass
    class MultimodalBaseModelOutputWithPast(ModelOutput):
        """The newer releases' class of that name, with the cache under the older releases' name."""

        last_hidden_state: torch.FloatTensor | None = None
        past_key_values: Cache | None = None
        hidden_states: tuple[torch.FloatTensor, ...] | None = None
        attentions: tuple[torch.FloatTensor, ...] | None = None
        image_outputs: BaseModelOutputWithPooling | None = None

    @dataclasses.dataclass
    class MultimodalCausalLMOutputWithPast(ModelOutput):
        """The newer releases' class of that name, with the cache under the older releases' name."""

        loss: torch.FloatTensor | None = None
        logits: torch.FloatTensor | None = None
        past_key_values: Cache | None = None
        hidden_states: tuple[torch.FloatTensor, ...] | None = None
        attentions: tuple[torch.FloatTensor, ...] | None = None
        image_outputs: BaseModelOutputWithPooling | None = None


if hasattr(modeling_utils, "slice_logits_to_keep"):
    slice_logits_to_keep = modeling_utils.slice_logits_to_keep
else:

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        """The last `logits_to_keep` positions (all for 0), or the positions a 1-D index tensor names."""
        positions = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return hidden_states[:, positions, :]


def get_cache(outputs: ModelOutput) -> Cache | None:
    """The KV cache of a model output, under the installed transformers' name."""
    return getattr(outputs, CACHE_ARG, None)


__all__ = [
    "CACHE_ARG",
    "build_sub_configs",
    "MultimodalBaseModelOutputWithPast",
    "MultimodalCausalLMOutputWithPast",
    "get_cache",
    "slice_logits_to_keep",
    "sub_config_specs",
    "takes_cache_argument",
]
