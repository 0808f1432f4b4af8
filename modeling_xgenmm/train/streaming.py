# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Training data streamed from web-scale corpora as `datasets.IterableDataset`s, read lazily, shard by shard.

Two streams, both of rows in the formats of `rows.py`:

- `pretraining_stream(files)`: interleaved documents and caption pairs in the corpora's published layouts,
    - interleaved documents as OBELICS and MINT-1T publish them: parquet or JSONL records with parallel `texts` and
      `images` lists, one of the two set per slot (null slots skipped), images as bytes, URLs, paths or
      `{"bytes", "path"}`;
    - webdataset tar shards (`<key>.jpg|.png|.webp` next to `<key>.txt|.json`), as BLIP3-KALE, BLIP3-OCR-200M and
      LAION-style caption sets ship them, read with the `webdataset` library;
  each becomes a document row `{"text": "...<image>...<|endofchunk|>...", "images": [PIL images]}`.
- `row_stream(files)`: JSON / JSONL files of rows in any format of `rows.py` (conversations for SFT), read lazily.

Sharding and order are the library's: each file is a shard of the `datasets.IterableDataset`, so accelerate gives
each process its own files (`IterableDataset.shard`, or whole batches in turn when there are fewer files than
processes), `shuffle(seed, buffer_size)` shuffles the shards and a buffer of records, and the order is the same for
the same seed and epoch: a resumed `Trainer` replays the stream to its step and continues, no record seen twice.

Records are kept compressed through the shuffle buffer and decoded after it. An image that is missing, does not
decode, or is a URL when URLs are not allowed is dropped and counted in `SkipCounts` by reason; a document keeps its
other slots; a record without text, or whose every image was dropped (a caption pair without its image), is skipped
whole, counted as well. Nothing is
downloaded unless `allow_image_urls=True`.
"""

import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import zip_longest
from pathlib import Path

import webdataset
from datasets import Features, IterableDataset, List, Value, interleave_datasets, load_dataset
from datasets import Image as ImageFeature
from PIL import Image
from transformers.image_utils import load_image

from ..checkpoint.contents import END_OF_CHUNK_TOKEN, IMAGE_TOKEN
from .rows import _load_rows_file, load_rows


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# The records every reader yields before decoding: OBELICS' parallel slots, images undecoded.
RECORD_FEATURES = Features({"texts": List(Value("string")), "images": List(ImageFeature(decode=False))})
STREAM_FORMATS = {".parquet": "parquet", ".tar": "webdataset"}
SKIP_REASONS = {
    "undecodable_image": "an image's bytes or file do not decode",
    "missing_image": "an image file that does not exist, or a caption shard sample without an image",
    "url_image": "an image given by URL while allow_image_urls is off",
    "download_failed": "an image URL that could not be fetched",
    "no_text": "a record with no text (or no caption) to train on",
    "no_image_left": "a record whose every image was dropped (a caption pair without its image)",
}


class SkipCounts(Counter):
    """What the stream dropped, by reason (`SKIP_REASONS`): a `Counter` the decoding step adds to and the trainer
    logs at each logging step as `skipped_<reason>`. Counted in the process that iterates the stream (with
    `dataloader_num_workers > 0`, in the workers, where the trainer cannot see them)."""

    def skip(self, reason: str) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; one of {sorted(SKIP_REASONS)}")
        self[reason] += 1

    def as_logs(self) -> dict[str, int]:
        return {f"skipped_{reason}": self[reason] for reason in SKIP_REASONS if self[reason]}


def _image_slot(value) -> dict | None:
    """One image slot as the `Image(decode=False)` storage `{"bytes", "path"}`; a URL or a path goes in `path`."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return {"bytes": value, "path": None}
    if isinstance(value, str):
        return {"bytes": None, "path": value}
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        return {"bytes": value.get("bytes"), "path": value.get("path")}
    raise ValueError(f"an image slot is bytes, a URL or path, or {{'bytes', 'path'}}; got a {type(value).__name__}")


def interleaved_documents(
    data_files: str | Sequence[str], texts_column: str = "texts", images_column: str = "images"
) -> IterableDataset:
    """OBELICS / MINT-1T documents from parquet or JSONL files (one shard per file), as undecoded records."""
    files = [str(path) for path in ([data_files] if isinstance(data_files, (str, os.PathLike)) else data_files)]
    builders = {"parquet" if file.endswith(".parquet") else "json" for file in files}
    if len(builders) != 1:
        raise ValueError(f"interleaved documents come in parquet or in JSONL files, not both: {files}")
    stream = load_dataset(builders.pop(), data_files={"train": files}, split="train", streaming=True)
    columns = list(stream.column_names or [])
    missing = {texts_column, images_column} - set(columns)
    if columns and missing:
        raise ValueError(
            f"interleaved documents have parallel {texts_column!r} and {images_column!r} lists (OBELICS layout); "
            f"{files[0]} has the columns {columns}"
        )

    def record(document: dict) -> dict:
        # Slot lists of unequal length are read as if padded with null slots.
        texts, images = document[texts_column] or [], document[images_column] or []
        return {"texts": list(texts), "images": [_image_slot(image) for image in images]}

    return stream.map(record, remove_columns=columns or None, features=RECORD_FEATURES)


def _webdataset_records(shards: list[str]) -> Iterator[dict]:
    # The shards are already this process's (datasets hands each generator call its own files): no node or worker
    # splitting inside webdataset. A shard that breaks off (a truncated download) is read up to the break, with a
    # warning, and the next one continues.
    samples = webdataset.WebDataset(
        shards, shardshuffle=False, nodesplitter=None, workersplitter=None, handler=webdataset.warn_and_continue
    )
    for sample in samples:
        image = next((sample[key] for key in IMAGE_EXTENSIONS if key in sample), None)
        yield {
            "texts": [None, _caption(sample)],
            # A sample without an image keeps an empty slot: it is dropped and counted as `missing_image`.
            "images": [{"bytes": image, "path": None}, None],
        }


def _caption(sample: dict) -> str | None:
    if "txt" in sample:
        return sample["txt"].decode("utf-8")
    if "json" in sample:
        meta = json.loads(sample["json"])
        return next((meta[key] for key in ("caption", "text") if isinstance(meta.get(key), str)), None)
    return None


def webdataset_captions(shards: str | Sequence[str]) -> IterableDataset:
    """Caption pairs from webdataset tar shards (one `datasets` shard per tar), as undecoded records: the image of
    each key (`.jpg`, `.jpeg`, `.png` or `.webp`) and its caption (`.txt`, or `caption` / `text` in `.json`)."""
    shards = [str(path) for path in ([shards] if isinstance(shards, (str, os.PathLike)) else shards)]
    return IterableDataset.from_generator(_webdataset_records, gen_kwargs={"shards": shards}, features=RECORD_FEATURES)


class DecodeRecord:
    """Turns an undecoded record into a document row, decoding its images and counting what it drops."""

    def __init__(self, counts: SkipCounts, allow_image_urls: bool = False, image_root: str | None = None):
        self.counts, self.allow_image_urls, self.image_root = counts, allow_image_urls, image_root

    def __call__(self, record: dict) -> dict:
        texts, slots = record["texts"], record["images"]
        if not any(texts):
            self.counts.skip("no_text")
            return {"text": None, "images": []}
        decoded = [None if slot is None else self.decode(slot) for slot in slots]
        if any(slot is not None for slot in slots) and all(image is None for image in decoded):
            # A caption pair without its image is no pair; a document that lost every image is not the document.
            self.counts.skip("no_image_left")
            return {"text": None, "images": []}
        parts, images, chunk_open, previous_text = [], [], False, False
        for text, image in zip_longest(texts, decoded):
            if image is not None:
                parts.append(END_OF_CHUNK_TOKEN if chunk_open else "")
                parts.append(IMAGE_TOKEN)
                images.append(image)
                chunk_open, previous_text = True, False
            if text:
                parts.append(("\n\n" if previous_text else "") + text)
                previous_text = True
        return {"text": "".join(parts) + (END_OF_CHUNK_TOKEN if chunk_open else ""), "images": images}

    def decode(self, slot: dict) -> Image.Image | None:
        data, path = slot["bytes"], slot["path"]
        if data is None and path and path.startswith(("http://", "https://")):
            if not self.allow_image_urls:
                self.counts.skip("url_image")
                return None
            try:
                return load_image(path, timeout=10)
            except Exception:  # any network or decoding failure of a fetched image drops that image
                self.counts.skip("download_failed")
                return None
        if data is None:
            if not path or not os.path.isfile(os.path.join(self.image_root or "", path)):
                self.counts.skip("missing_image")
                return None
            data = Path(self.image_root or "", path).read_bytes()
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
            self.counts.skip("undecodable_image")
            return None
        return image


def pretraining_stream(
    files: str | Sequence[str],
    *,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    counts: SkipCounts | None = None,
    allow_image_urls: bool = False,
    image_root: str | None = None,
    probabilities: Sequence[float] | None = None,
) -> IterableDataset:
    """Document rows from interleaved-document files (`.parquet`, `.jsonl`) and caption shards (`.tar`): the two
    kinds interleaved (`probabilities`, by default in turn; each record once, until every source is exhausted),
    records shuffled in a `shuffle_buffer` (0: in file order) with `seed`, then decoded (`DecodeRecord`; what it
    drops is counted in `counts`).

    Relative image paths in documents are read from `image_root` (default: the first document file's folder).
    """
    files = [str(path) for path in ([files] if isinstance(files, (str, os.PathLike)) else files)]
    if not files:
        raise ValueError("no data files for the pretraining stream")
    tars = [file for file in files if file.endswith(".tar")]
    documents = [file for file in files if not file.endswith(".tar")]
    unknown = [file for file in documents if not file.endswith((".parquet", ".jsonl", ".json"))]
    if unknown:
        raise ValueError(f"pretraining streams read .parquet, .jsonl and .tar files, got {unknown}")
    sources = ([interleaved_documents(documents)] if documents else []) + ([webdataset_captions(tars)] if tars else [])
    stream = sources[0]
    if len(sources) > 1:
        stream = interleave_datasets(
            sources, probabilities, seed=seed, stopping_strategy="all_exhausted_without_replacement"
        )
    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    if image_root is None and documents:
        image_root = str(Path(documents[0]).parent)
    decode = DecodeRecord(counts if counts is not None else SkipCounts(), allow_image_urls, image_root)
    return stream.map(decode, remove_columns=["texts"]).filter(lambda row: row["text"] is not None)


def _json_rows(files: list[str]) -> Iterator[dict]:
    for file in files:
        for row in _load_rows_file(Path(file)):
            yield {"row": json.dumps(row)}


def row_stream(files: str | Sequence[str], *, seed: int = 0, shuffle_buffer: int = 1000) -> IterableDataset:
    """Rows of JSON / JSONL files in the formats of `rows.py` (relative image paths resolved against each file's
    folder), one shard per file, shuffled in a `shuffle_buffer` (0: in file order) with `seed`. A file is read when
    its shard starts."""
    files = [str(path) for path in ([files] if isinstance(files, (str, os.PathLike)) else files)]
    missing = [file for file in files if not os.path.isfile(file)]
    if missing:
        raise FileNotFoundError(f"dataset files not found: {missing}")
    stream = IterableDataset.from_generator(
        _json_rows, gen_kwargs={"files": files}, features=Features({"row": Value("string")})
    )
    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return stream.map(lambda record: json.loads(record["row"]), remove_columns=["row"])


def load_training_data(
    files: Sequence[str],
    *,
    streaming: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    allow_image_urls: bool = False,
) -> tuple[list[dict] | IterableDataset, SkipCounts | None]:
    """The example scripts' data: (rows or stream, the stream's `SkipCounts` or None).

    Web-corpus files (`.parquet` documents, `.tar` caption shards, with any `.jsonl` among them read as OBELICS-style
    documents too) are always streamed (`pretraining_stream`); JSON / JSONL row files are read into memory
    (`load_rows`), or streamed with `streaming=True` (`row_stream`).
    """
    files = [str(file) for file in files]
    if any(file.endswith(tuple(STREAM_FORMATS)) for file in files):
        counts = SkipCounts()
        stream = pretraining_stream(
            files, seed=seed, shuffle_buffer=shuffle_buffer, counts=counts, allow_image_urls=allow_image_urls
        )
        return stream, counts
    if streaming:
        return row_stream(files, seed=seed, shuffle_buffer=shuffle_buffer), None
    return load_rows(*files), None


__all__ = [
    "SKIP_REASONS",
    "DecodeRecord",
    "SkipCounts",
    "interleaved_documents",
    "load_training_data",
    "pretraining_stream",
    "row_stream",
    "webdataset_captions",
]
