# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Publishes an xGen-MM model on the Hugging Face Hub as a self-contained folder that loads with
`trust_remote_code=True` where this package is not installed.

The folder holds config.json (with the `auto_map` of every Auto class), generation_config.json, the model and
processing code (flat, sibling imports only), processor_config.json, the tokenizer files, chat_template.jinja, the
safetensors weights (copied byte for byte) and a README.md model card. `prepare_hub_folder` writes it; `publish`
writes it and uploads it with `create_repo(exist_ok=True)` + `upload_folder`.

    xgenmm publish ./my-model me/xgen-mm-finetuned
    xgenmm publish hub_configs/xgen-mm-phi3-mini-instruct-dpo-r-v1.5 me/xgen-mm-dpo --weights ./converted \\
        --tokenizer Salesforce/xgen-mm-phi3-mini-instruct-dpo-r-v1.5 --dry-run
"""

import collections
import os
import tempfile
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoImageProcessor, AutoProcessor, GenerationConfig, PreTrainedModel
from transformers.utils import CONFIG_NAME, GENERATION_CONFIG_NAME, PROCESSOR_NAME, logging

from xgenmm_processing import XGenMMProcessor, XGenMMTokenizer

from ..checkpoint.contents import stop_at_end_of_turn
from ..checkpoint.folders import (
    ModelFolderError,
    SafetensorsWeights,
    check_output_folder,
    find_safetensors_weights,
    link_or_copy,
    new_output_folder,
    read_json,
    save_model_files,
)
from ..checkpoint.key_map import is_original_config
from ..checkpoint.network import HubRequestError, call_hub
from ..configuration_xgenmm import XGenMMConfig
from ..modeling_xgenmm import XGenMMForConditionalGeneration
from .card_results import add_card_results, card_results
from .model_card import model_card
from .variants import VARIANTS


logger = logging.get_logger(__name__)

SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"


class PublishError(ValueError):
    """A model folder, weights or repo id that cannot be published, with what was expected instead."""


def prepare_hub_folder(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    weights: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    variant: str | None = None,
) -> Path:
    """Writes the Hub folder of the model in `source` into `output_dir` (which must not exist or be empty).

    Everything is checked before anything is written.

    Args:
        source: a folder saved by `save_pretrained` (model and processor), or a `hub_configs/<variant>` folder
            (configuration and processing files) together with `weights`.
        output_dir: the folder to write.
        repo_id: the Hub repo id the model card's usage snippets load.
        weights: folder of the safetensors weights (`model.safetensors`, or shards and their index); defaults to
            `source`.
        tokenizer: folder or Hub repo id of the tokenizer (this package's format or the original Phi-3 one); defaults
            to the first of `source` and `weights` that holds tokenizer files.
        variant: which released variant (a `hub_configs` folder name) the model card describes; defaults to the
            name of `source` when it is one, otherwise the card describes an unnamed xGen-MM model. The evaluation
            results in the model-index of `source`'s README.md (`xgenmm eval` writes them there) are carried into
            the card.

    Returns the output folder.
    """
    check_repo_id(repo_id)
    try:
        check_output_folder(output_dir)
    except ModelFolderError as error:
        raise PublishError(str(error)) from None
    source = Path(source)
    weights_dir = Path(weights) if weights is not None else source
    config = load_source_config(source)
    weights = find_weights(weights_dir)
    dtype = check_weights_fit(config, source, weights)
    processor = load_processor(source, find_tokenizer(tokenizer, source, weights_dir))
    try:
        generation_config = stop_at_end_of_turn(
            load_generation_config(source, weights_dir, config), config, processor.tokenizer
        )
    except ValueError as error:
        raise PublishError(str(error)) from None
    variant = variant if variant is not None else (source.name if source.name in VARIANTS else None)
    # Results that `xgenmm eval` wrote into the source folder's card travel with the model.
    card = add_card_results(
        model_card(config, repo_id, variant=variant), card_results(source / "README.md"), repo_id.split("/")[-1]
    )

    with torch.device("meta"):
        model = XGenMMForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config = generation_config
    write_hub_folder(output_dir, model, processor, weights, card)
    logger.info(f"Wrote the Hub folder of {repo_id} to {output_dir}")
    return Path(output_dir)


def write_hub_folder(
    output_dir: str | os.PathLike,
    model: PreTrainedModel,
    processor: XGenMMProcessor,
    weights: SafetensorsWeights,
    card: ModelCard,
) -> None:
    """Writes the checked parts into `output_dir`, through a staging folder that becomes `output_dir` only when
    complete: the model's config and code (`model` on the meta device), the processor, the weight files (linked or
    copied byte for byte) and the model card."""
    weight_files = [*([weights.index_file] if weights.index_file else []), *weights.files]
    with new_output_folder(output_dir) as staging:
        save_model_files(model, staging)
        processor.save_pretrained(staging)
        for weight_file in logging.tqdm(weight_files, desc="Copying weights", unit="file"):
            link_or_copy(weight_file, staging / weight_file.name)
        card.save(staging / "README.md")


def publish(
    source: str | os.PathLike,
    repo_id: str,
    *,
    weights: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    variant: str | None = None,
    output_dir: str | os.PathLike | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> CommitInfo:
    """Writes the Hub folder of the model in `source` (see `prepare_hub_folder`) and uploads it to `repo_id`, which is
    created if needed. The folder is written to `output_dir` when given, otherwise to a temporary folder removed
    afterwards. `token` defaults to the saved Hugging Face login.

    Returns the `CommitInfo` of the upload.
    """
    with tempfile.TemporaryDirectory(prefix="xgenmm-publish-") as staging:
        folder = prepare_hub_folder(
            source,
            output_dir if output_dir is not None else staging,
            repo_id,
            weights=weights,
            tokenizer=tokenizer,
            variant=variant,
        )
        api = HfApi(token=token)
        try:
            repo_url = call_hub(
                f"creating the Hub repo {repo_id}", lambda: api.create_repo(repo_id, private=private, exist_ok=True)
            )
            # One commit: a failed upload changes nothing on the Hub and can simply be run again.
            return call_hub(
                f"uploading {folder} to {repo_id}",
                lambda: api.upload_folder(
                    repo_id=repo_url.repo_id,
                    folder_path=folder,
                    commit_message=commit_message or f"Upload {Path(source).name} with xgen-mm",
                ),
                attempts=1,
            )
        except HubRequestError as error:
            raise PublishError(str(error)) from error


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"{repo_id!r} is not a valid Hub repo id ('namespace/name' or 'name'): {error}") from error


def load_source_config(source: Path) -> XGenMMConfig:
    config_file = source / CONFIG_NAME
    if not config_file.is_file():
        raise PublishError(f"{source} has no {CONFIG_NAME}: expected a model folder saved with save_pretrained")
    try:
        config_dict = read_json(config_file)
    except ModelFolderError as error:
        raise PublishError(str(error)) from None
    if is_original_config(config_dict):
        raise PublishError(
            f"{source} is an original Salesforce checkpoint; convert it first (`xgenmm convert {source} OUT`) and "
            "publish the converted folder"
        )
    if config_dict.get("model_type") != XGenMMConfig.model_type:
        raise PublishError(
            f"{source} holds a {config_dict.get('model_type')!r} model, expected an {XGenMMConfig.model_type!r} one"
        )
    return XGenMMConfig.from_pretrained(source)


def find_weights(weights_dir: Path) -> SafetensorsWeights:
    try:
        return find_safetensors_weights(weights_dir)
    except ModelFolderError as error:
        raise PublishError(
            f"{error} (save the model with save_pretrained, or pass the folder that holds them as weights / --weights)"
        ) from None


def check_weights_fit(config: XGenMMConfig, source: Path, weights: SafetensorsWeights) -> torch.dtype:
    """Compares the names and shapes in the safetensors headers with the model `config` builds (on the meta device,
    nothing is loaded). Returns the dtype most of the weights have."""
    headers = weights.headers()
    shapes = {key: shape for key, (shape, _) in headers.items()}
    dtypes = collections.Counter(dtype for _, dtype in headers.values())
    with torch.device("meta"):
        model = XGenMMForConditionalGeneration(config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = {
        "missing": sorted(expected.keys() - shapes.keys()),
        "unexpected": sorted(shapes.keys() - expected.keys()),
        "wrong shape": [
            f"{key} {shapes[key]} instead of {expected[key]}"
            for key in sorted(expected.keys() & shapes.keys())
            if shapes[key] != expected[key]
        ],
    }
    if any(problems.values()):
        summary = "; ".join(
            f"{label} ({len(names)}): {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
            for label, names in problems.items()
            if names
        )
        if any(key.startswith("vlm.") for key in problems["unexpected"]):
            summary += "; these are original Salesforce names: convert the checkpoint with `xgenmm convert` first"
        raise PublishError(f"the weights in {weights.files[0].parent} do not fit the config of {source}: {summary}")
    dtype_name = dtypes.most_common(1)[0][0]
    if dtype_name not in SAFETENSORS_DTYPES:
        raise PublishError(f"the weights are {dtype_name}; expected one of {sorted(SAFETENSORS_DTYPES)}")
    return SAFETENSORS_DTYPES[dtype_name]


def find_tokenizer(tokenizer: str | os.PathLike | None, *folders: Path) -> str | os.PathLike:
    if tokenizer is not None:
        return tokenizer
    for folder in folders:
        if (folder / TOKENIZER_CONFIG_NAME).is_file():
            return folder
    raise PublishError(
        f"no tokenizer files ({TOKENIZER_CONFIG_NAME} with tokenizer.json or tokenizer.model) in "
        f"{' or '.join(str(folder) for folder in dict.fromkeys(folders))}; pass the tokenizer's folder or Hub repo id "
        "as tokenizer / --tokenizer"
    )


def load_processor(source: Path, tokenizer: str | os.PathLike) -> XGenMMProcessor:
    """The processor of `source` (image processor settings, chat template, tokens per view) with the tokenizer of
    `tokenizer`."""
    if not (source / PROCESSOR_NAME).is_file():
        raise PublishError(
            f"{source} has no {PROCESSOR_NAME}: save the processor there too (processor.save_pretrained), or "
            "publish from the hub_configs folder of the variant with the weights given separately"
        )
    if Path(tokenizer) == source:
        return AutoProcessor.from_pretrained(source)
    # The released variants' tokenizer lives in another folder (often the original Phi-3 format, which
    # XGenMMTokenizer completes with the image tokens): assemble the processor from its parts.
    processor_dict, _ = XGenMMProcessor.get_processor_dict(source)
    image_processor = AutoImageProcessor.from_pretrained(source)
    return XGenMMProcessor.from_args_and_dict(
        [image_processor, XGenMMTokenizer.from_pretrained(tokenizer)], processor_dict
    )


def load_generation_config(source: Path, weights_dir: Path, config: XGenMMConfig) -> GenerationConfig:
    for folder in dict.fromkeys((source, weights_dir)):
        if (folder / GENERATION_CONFIG_NAME).is_file():
            return GenerationConfig.from_pretrained(folder)
    return GenerationConfig.from_model_config(config)


__all__ = ["PublishError", "prepare_hub_folder", "publish"]
