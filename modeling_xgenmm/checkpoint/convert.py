# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Converts a released Salesforce xGen-MM v1.5 checkpoint (original format) into this package's format.

The output folder loads with `from_pretrained`, and with `trust_remote_code=True` where this package is not
installed: it holds the translated config.json (with the Hub `auto_map`), the model code, generation_config.json,
sharded safetensors weights, and the processing files: the image processor with the released grids, and, when the
original folder has its Phi-3 tokenizer, the tokenizer (with `<image>`, `<image placeholder>`, `<|endofchunk|>` at
the released ids), the chat template and the processor. The weights are streamed: one original tensor is read at a
time and only the output shard being written is held in memory, never a second copy of the whole model. A failed
conversion leaves no output folder behind.

    xgenmm convert Salesforce/xgen-mm-phi3-mini-instruct-singleimg-r-v1.5 ./xgen-mm-instruct --dtype bfloat16
"""

import json
import os
from pathlib import Path

import torch
from huggingface_hub import snapshot_download, split_torch_state_dict_into_shards
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GenerationConfig
from transformers.utils import GENERATION_CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, logging

from xgenmm_processing import XGenMMTokenizer

from ..configuration_xgenmm import XGenMMConfig
from ..modeling_xgenmm import XGenMMForConditionalGeneration
from .contents import build_image_processor, build_processor, stop_at_end_of_turn
from .folders import (
    ModelFolderError,
    check_output_folder,
    find_safetensors_weights,
    new_output_folder,
    read_json,
    save_model_files,
)
from .key_map import OriginalCheckpointError, OriginalWeightPlan, is_original_config, plan_original_weights
from .network import HubRequestError, call_hub


logger = logging.get_logger(__name__)

# What a released repository holds besides code and notebooks: configs, weights, tokenizer files.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.jinja"]

# Any of these next to the original config means the folder carries its Phi-3 tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def convert_original_checkpoint(
    original: str | os.PathLike,
    output_dir: str | os.PathLike,
    dtype: torch.dtype = torch.bfloat16,
    max_shard_size: int | str = "5GB",
) -> Path:
    """Converts the original checkpoint `original` (a local folder or a Hub repo id) into `output_dir`.

    Args:
        original: folder or Hub repo id of an original Salesforce xGen-MM checkpoint (config.json with
            `vision_encoder_config`, preprocessor_config.json, safetensors weights with `vlm.` keys).
        output_dir: folder to write; it must not exist or be empty.
        dtype: dtype of the written weights.
        max_shard_size: largest weight file; peak memory is about one such shard.

    Returns the output folder.
    """
    check_output_folder(output_dir)
    original_dir = resolve_original_folder(original)
    config = load_original_config(original_dir)
    # The target layout (names, shapes, dtypes) without allocating any weight.
    with torch.device("meta"):
        model = XGenMMForConditionalGeneration._from_config(config, dtype=dtype)
    tokenizer = load_original_tokenizer(original_dir, model.config)
    model.generation_config = stop_at_end_of_turn(original_generation_config(original_dir, config), config, tokenizer)
    try:
        weights = find_safetensors_weights(original_dir)
    except ModelFolderError as error:
        raise OriginalCheckpointError(str(error)) from None
    key_to_file = weights.key_to_file()
    plan = plan_original_weights(key_to_file, model)
    plan.check_shapes({key: shape for key, (shape, _) in weights.headers().items()}, model)

    # Everything is checked before anything is written; each group of output files is then written by one call, into
    # a staging folder that becomes `output_dir` only when all of them are written.
    with new_output_folder(output_dir) as staging:
        save_model_files(model, staging)
        save_processing_files(model.config, tokenizer, staging)
        write_weights(plan, key_to_file, model, staging, max_shard_size)
    return Path(output_dir)


def resolve_original_folder(original: str | os.PathLike) -> Path:
    """A local folder as is; anything else is fetched as a Hub repo id (configs, weights and tokenizer files)."""
    if Path(original).is_dir():
        return Path(original)
    if str(original).startswith((".", "/", "~")) or os.sep + os.sep in str(original):
        raise OriginalCheckpointError(f"{original} does not exist: it is neither a local folder nor a Hub repo id")
    try:
        fetched = call_hub(
            f"fetching {original} from the Hub",
            lambda: snapshot_download(str(original), allow_patterns=HUB_ALLOW_PATTERNS),
        )
    except HubRequestError as error:
        raise OriginalCheckpointError(f"{original} is not a local folder, and {error}") from error
    return Path(fetched)


def load_original_config(original_dir: Path) -> XGenMMConfig:
    """The translated config of an original checkpoint; its preprocessor_config.json decides base vs instruct."""
    config_file = original_dir / "config.json"
    if not config_file.is_file():
        raise OriginalCheckpointError(f"{original_dir} has no config.json: it is not a model checkpoint")
    config_dict = read_json(config_file)
    if not is_original_config(config_dict):
        if config_dict.get("model_type") == XGenMMConfig.model_type:
            raise OriginalCheckpointError(
                f"{original_dir} is already in this package's format (its config.json has no vision_encoder_config); "
                "load it with from_pretrained, no conversion needed"
            )
        raise OriginalCheckpointError(
            f"{original_dir} is not an original Salesforce xGen-MM checkpoint: its config.json has "
            f"model_type={config_dict.get('model_type')!r} and no vision_encoder_config"
        )
    if not (original_dir / "preprocessor_config.json").is_file():
        raise OriginalCheckpointError(
            f"{original_dir} has no preprocessor_config.json, whose `grids` tell a base checkpoint (null) from an "
            "instruct one (the original config.json says image_aspect_ratio='anyres' for both)"
        )
    return XGenMMConfig.from_pretrained(original_dir)


def original_generation_config(original_dir: Path, config: XGenMMConfig) -> GenerationConfig:
    """The settings of the original generation_config.json, or the text config's ids without one (the eos of each
    variant is decided by `stop_at_end_of_turn`)."""
    generation_file = original_dir / GENERATION_CONFIG_NAME
    if not generation_file.is_file():
        text_config = config.text_config
        return GenerationConfig(
            bos_token_id=text_config.bos_token_id,
            eos_token_id=text_config.eos_token_id,
            pad_token_id=text_config.pad_token_id,
        )
    # Settings only: the original file's bookkeeping (`_from_model_config`, `transformers_version`) is not ours.
    settings = read_json(generation_file)
    settings = {key: value for key, value in settings.items() if not key.startswith("_")}
    settings.pop("transformers_version", None)
    return GenerationConfig.from_dict(settings)


def load_original_tokenizer(original_dir: Path, config: XGenMMConfig) -> XGenMMTokenizer | None:
    """The original Phi-3 tokenizer extended by the three xGen-MM tokens, or `None` when the folder has no tokenizer
    files; raises when its `<image>` id is not the checkpoint's."""
    if not any((original_dir / name).is_file() for name in TOKENIZER_FILES):
        logger.warning(
            f"{original_dir} has no tokenizer files: writing the image processor only. Copy the Phi-3 tokenizer of "
            "the released repository next to the original config and convert again to get the full processor."
        )
        return None
    tokenizer = XGenMMTokenizer.from_pretrained(original_dir)
    if tokenizer.image_token_id != config.image_token_id:
        raise OriginalCheckpointError(
            f"the tokenizer in {original_dir} puts <image> at id {tokenizer.image_token_id} but the checkpoint's "
            f"config expects {config.image_token_id} (initial_tokenizer_len): they do not belong together"
        )
    return tokenizer


def save_processing_files(config: XGenMMConfig, tokenizer: XGenMMTokenizer | None, output_dir: Path) -> None:
    """The processor implied by the translated config (grids, view size, latents per view, instruct or base chat
    template) with the tokenizer; without a tokenizer only the image processor can be written."""
    if tokenizer is None:
        build_image_processor(config).save_pretrained(output_dir)
    else:
        build_processor(config, tokenizer).save_pretrained(output_dir)


def write_weights(
    plan: OriginalWeightPlan,
    key_to_file: dict[str, Path],
    model: XGenMMForConditionalGeneration,
    output_dir: Path,
    max_shard_size: int | str,
) -> None:
    """Builds each parameter from its original tensors and writes them shard by shard, as `save_pretrained` shards
    them (same file names and index)."""
    parameters = model.state_dict()
    filename_pattern = SAFE_WEIGHTS_NAME.replace(".safetensors", "{suffix}.safetensors")
    split = split_torch_state_dict_into_shards(
        parameters, filename_pattern=filename_pattern, max_shard_size=max_shard_size
    )

    def read(key: str, dtype: torch.dtype) -> torch.Tensor:
        # Opening the file per tensor maps one tensor at a time, so the original shards never pile up in memory.
        with safe_open(key_to_file[key], framework="pt") as reader:
            return reader.get_tensor(key).to(dtype)

    progress = logging.tqdm(total=len(parameters), desc="Converting weights", unit="tensor")
    for filename, names in split.filename_to_tensors.items():
        shard = {}
        # Largest first: the transient copies of a big tensor (source dtype, merge) then meet a nearly empty shard.
        for name in sorted(names, key=lambda name: parameters[name].numel(), reverse=True):
            dtype = parameters[name].dtype
            shard[name] = plan.build(name, lambda key, dtype=dtype: read(key, dtype), model).contiguous()
            progress.update()
        save_file(shard, output_dir / filename, metadata={"format": "pt"})
        del shard
    progress.close()

    if split.is_sharded:
        index = {
            "metadata": {"total_parameters": model.num_parameters(), **split.metadata},
            "weight_map": split.tensor_to_filename,
        }
        (output_dir / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


__all__ = ["convert_original_checkpoint"]
