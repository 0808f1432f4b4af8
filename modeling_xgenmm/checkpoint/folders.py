# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Model folders on disk: where the weights of a folder are, and writing a new folder (the converter's and the
publisher's output) so that a failure leaves nothing behind."""

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, logging


# Weight files `from_pretrained` reads, safetensors or not.
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


class ModelFolderError(ValueError):
    """A model folder that cannot be read or written, with what was expected instead."""


def read_json(path: Path) -> dict:
    """A JSON object from `path`; `ModelFolderError` naming the file when it is not valid JSON or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelFolderError(f"{path} is not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise ModelFolderError(f"{path} is not a text file ({error})") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(value).__name__}, expected an object")
    return value


def _open_safetensors(path: Path):
    try:
        return safe_open(path, framework="pt")
    except (SafetensorError, OSError) as error:
        raise ModelFolderError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from None


def has_weight_files(folder: Path) -> bool:
    """Whether `folder` holds any weight file `from_pretrained` reads."""
    return any(path.name.endswith(WEIGHT_FILE_SUFFIXES) for path in Path(folder).iterdir())


@dataclass(frozen=True)
class SafetensorsWeights:
    """The safetensors weights of a folder: the single `model.safetensors`, or the shard index and every shard."""

    files: tuple[Path, ...]
    index_file: Path | None = None

    def key_to_file(self) -> dict[str, Path]:
        """Tensor name -> the file holding it, from the index or the single file's header."""
        if self.index_file is not None:
            weight_map = read_json(self.index_file).get("weight_map") or {}
            return {key: self.index_file.parent / name for key, name in weight_map.items()}
        with _open_safetensors(self.files[0]) as reader:
            return dict.fromkeys(reader.keys(), self.files[0])

    def headers(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Tensor name -> (shape, safetensors dtype name), from the file headers only (nothing is loaded)."""
        headers = {}
        for weights_file in self.files:
            with _open_safetensors(weights_file) as reader:
                for key in reader.keys():
                    tensor = reader.get_slice(key)
                    headers[key] = (tuple(tensor.get_shape()), tensor.get_dtype())
        return headers


def find_safetensors_weights(folder: str | os.PathLike) -> SafetensorsWeights:
    """The safetensors weights of `folder`; raises `ModelFolderError` when there are none or the index names shards
    that are missing."""
    folder = Path(folder)
    index_file = folder / SAFE_WEIGHTS_INDEX_NAME
    if index_file.is_file():
        weight_map = read_json(index_file).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelFolderError(f"{index_file} has no 'weight_map' object")
        shards = sorted(set(weight_map.values()))
        absent = [name for name in shards if not (folder / name).is_file()]
        if absent:
            raise ModelFolderError(f"{index_file} names weight files that are missing: {absent}")
        return SafetensorsWeights(files=tuple(folder / name for name in shards), index_file=index_file)
    if (folder / SAFE_WEIGHTS_NAME).is_file():
        return SafetensorsWeights(files=(folder / SAFE_WEIGHTS_NAME,))
    raise ModelFolderError(
        f"{folder} has no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}: the weights are missing"
    )


def check_output_folder(output_dir: str | os.PathLike) -> Path:
    """`output_dir` as a `Path`; raises `ModelFolderError` unless it does not exist or is an empty folder."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ModelFolderError(f"{output_dir} exists and is not an empty folder; choose a new output folder")
    return output_dir


@contextmanager
def new_output_folder(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Yields a staging folder next to `output_dir` to write into; on success it becomes `output_dir`, on any error
    it is removed, so a failed run leaves no half-written folder behind to block the next one.

    `output_dir` must not exist or be an empty folder (`check_output_folder`).
    """
    output_dir = check_output_folder(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp: the folder becomes the output, which gets the permissions of any folder the user
    # makes (the umask's), not mkdtemp's 0700 that other users and services could not read.
    staging = output_dir.parent / f".{output_dir.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
        # rename(2) replaces an empty folder, so an existing empty `output_dir` is fine.
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _without_progress_bars():
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def save_model_files(model: PreTrainedModel, output_dir: Path) -> None:
    """config.json with the Hub `auto_map`, the model code and generation_config.json, written by the model's own
    `save_pretrained` from a model on the meta device; the empty state dict leaves the weights to the caller."""
    with _without_progress_bars():
        model.save_pretrained(output_dir, state_dict={})


def link_or_copy(source: Path, target: Path) -> None:
    """Weights run to gigabytes: a hard link costs no space or time; across file systems it has to be a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


__all__ = [
    "ModelFolderError",
    "SafetensorsWeights",
    "check_output_folder",
    "find_safetensors_weights",
    "has_weight_files",
    "link_or_copy",
    "read_json",
    "new_output_folder",
    "save_model_files",
]
