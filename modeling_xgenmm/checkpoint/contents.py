# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""What a model folder holds besides its weights, decided once for the converter, the publisher, the evaluation and
`hub_configs/`: whether the model is an instruct (chat) or a base (few-shot) model, its processor and chat template,
and the ids at which generation stops."""

from importlib import resources

from transformers import GenerationConfig
from transformers.utils import logging

from xgenmm_processing import XGenMMImageProcessor, XGenMMProcessor, XGenMMTokenizer

from ..configuration_xgenmm import XGenMMConfig


logger = logging.get_logger(__name__)

# The special tokens of the released vocabulary, as the tokenizer (`XGenMMTokenizer`'s defaults) and the chat
# templates write them: an image's marker, the filler after it in the original base-model prompts, the end of an
# interleaved chunk, and the end of every turn of the instruct chat template (generation must stop there).
IMAGE_TOKEN = "<image>"
IMAGE_PLACEHOLDER_TOKEN = "<image placeholder>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"
END_OF_TURN_TOKEN = "<|end|>"
# Phi-3's added tokens sit just below xGen-MM's three (`<image>` is the first, at `initial_tokenizer_len`); `<|end|>`
# is 5 below it (32007 = 32012 - 5 in the release). Only used when no tokenizer is at hand.
PHI3_END_OFFSET = 5


def is_instruct(config: XGenMMConfig) -> bool:
    """Instruct (chat) models run in any-resolution mode, the base (few-shot) model on fixed square views: the
    released configs say which only through `anyres`."""
    return config.anyres


def chat_template(config: XGenMMConfig) -> str:
    """The chat template of the model's kind (`xgenmm_processing/chat_templates/{instruct,base}.jinja`)."""
    name = "instruct.jinja" if is_instruct(config) else "base.jinja"
    return resources.files("xgenmm_processing").joinpath("chat_templates", name).read_text(encoding="utf-8")


def build_image_processor(config: XGenMMConfig) -> XGenMMImageProcessor:
    """The image processor the config implies (any-resolution or base mode, grids, view size)."""
    return XGenMMImageProcessor(
        anyres=config.anyres,
        image_grid_pinpoints=config.image_grid_pinpoints,
        size={"height": config.image_size, "width": config.image_size},
    )


def build_processor(config: XGenMMConfig, tokenizer: XGenMMTokenizer) -> XGenMMProcessor:
    """The processor the config implies (grids, view size, latents per view, chat template)."""
    return XGenMMProcessor(
        image_processor=build_image_processor(config),
        tokenizer=tokenizer,
        chat_template=chat_template(config),
        image_seq_length=config.perceiver_config.num_latents,
    )


def end_of_turn_id(config: XGenMMConfig, tokenizer: XGenMMTokenizer | None = None) -> int:
    """Id of `<|end|>`: the tokenizer's when given, else its place in the Phi-3 layout below `<image>`."""
    if tokenizer is None:
        return config.image_token_id - PHI3_END_OFFSET
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {END_OF_TURN_TOKEN} token, which ends every instruct turn")
    return token_id


def stop_at_end_of_turn(
    generation_config: GenerationConfig, config: XGenMMConfig, tokenizer: XGenMMTokenizer | None = None
) -> GenerationConfig:
    """The generation config with `<|end|>` first among the eos ids of an instruct model, the ids it had kept after
    it: without it the model talks on past its answer (the released generation config had this bug once). A base
    model keeps its eos ids."""
    if not is_instruct(config):
        return generation_config
    end_id = end_of_turn_id(config, tokenizer)
    eos = generation_config.eos_token_id
    eos = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
    if eos[:1] != [end_id]:
        logger.info(f"Stopping generation at {END_OF_TURN_TOKEN} (id {end_id}) before eos_token_id {eos or None}")
        generation_config.eos_token_id = [end_id, *(token for token in eos if token != end_id)]
    return generation_config


__all__ = [
    "END_OF_CHUNK_TOKEN",
    "END_OF_TURN_TOKEN",
    "IMAGE_PLACEHOLDER_TOKEN",
    "IMAGE_TOKEN",
    "build_image_processor",
    "build_processor",
    "chat_template",
    "end_of_turn_id",
    "is_instruct",
    "stop_at_end_of_turn",
]
