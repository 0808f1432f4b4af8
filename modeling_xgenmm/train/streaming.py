# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Training data streamed from web-scale corpora as `datasets.IterableDataset`s, read lazily, shard by shard.

Two streams, both of rows in the formats of `rows.py`:

- `pretraining_stream(files)`: interleaved documents and caption pairs in the corpora's published layouts,
    - interleaved documents as OBELICS and MINT-1T publish them: parquet or JSONL records with parallel `texts` and
      `images` lists, one of the two set per slot (null slots skipped), images as bytes, URLs, paths or
      `{"bytes", "path"}`;
    - webdataset tar shards (`<key>.jpg|.png|.webp|...` next to `<key>.txt|.json`), as BLIP3-KALE, BLIP3-OCR-200M
      and LAION-style caption sets ship them, read with the `webdataset` library;
  each becomes a document row `{"text": "...<image>...<|endofchunk|>...", "images": [PIL images]}`.
- `row_stream(files)`: JSON / JSONL files of rows in any format of `rows.py` (conversations for SFT), read lazily;
  each row keeps where it was read (`rows.SOURCE_KEYS`).

Sharding and order are the library's: each file is a shard of the `datasets.IterableDataset`, so accelerate gives
each process its own files (`IterableDataset.shard`, or whole batches in turn when there are fewer files than
processes), `shuffle(seed, buffer_size)` shuffles the shards and a buffer of records, and the order is the same for
the same seed and epoch: a resumed `Trainer` replays the stream to its step and continues, no record seen twice.

Nothing a record holds stops a run: every record-level failure is dropped, counted in `SkipCounts` by reason
(`SKIP_REASONS`) and logged with its file. An image that is missing, does not decode, or is a URL when URLs are not
allowed is dropped; a document keeps its other slots; a record without text, whose every image was dropped (a caption
pair without its image), or that does not parse (a JSON line that is not JSON, a caption that is not UTF-8 text) is
skipped whole. A shard that cannot be opened, or breaks off, is read up to the break and skipped from there, with a
warning naming it. What is wrong with the whole corpus is an error before anything is read: a file that does not
exist, a document file whose columns are not the layout's lists. Nothing is downloaded unless
`allow_image_urls=True`.
"""

import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import zip_longest
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset
from datasets import Features, IterableDataset, List, Value, interleave_datasets
from datasets import Image as ImageFeature
from PIL import Image
from transformers.image_utils import load_image
from transformers.utils import logging

from ..checkpoint.contents import END_OF_CHUNK_TOKEN, IMAGE_TOKEN
from .rows import JSONLineError, image_urls, json_lines, load_rows, read_json_records, resolve_image_paths


logger = logging.get_logger(__name__)

# The records every reader yields before decoding: OBELICS' parallel slots, images undecoded, where the record was
# read, and for a record that could not be read the reason it is skipped (`SKIP_REASONS`) and what went wrong.
RECORD_FEATURES = Features(
    {
        "texts": List(Value("string")),
        "images": List(ImageFeature(decode=False)),
        "source": Value("string"),
        "skip": Value("string"),
        "error": Value("string"),
    }
)
ROW_FEATURES = Features(
    {"row": Value("string"), "source": Value("string"), "skip": Value("string"), "error": Value("string")}
)
STREAM_FORMATS = {".parquet": "parquet", ".tar": "webdataset"}
DOCUMENT_FORMATS = (".parquet", ".jsonl", ".json")
SKIP_REASONS = {
    "undecodable_image": "an image's bytes or file do not decode",
    "missing_image": "an image file that does not exist, or a caption shard sample without an image",
    "url_image": "an image given by URL while allow_image_urls is off (a row naming one is skipped whole)",
    "download_failed": "an image URL that could not be fetched",
    "no_text": "a record with no text (or no caption) to train on",
    "no_image_left": "a record whose every image was dropped (a caption pair without its image)",
    "bad_record": "a record that cannot be read: a JSON line that is not JSON or not an object, a caption that is "
    "not UTF-8 text or JSON, slots that are not lists",
    "bad_row": "a streamed row the stage cannot train on (no assistant turn, a format the stage does not take, no "
    "target left after truncation, ...)",
    "unreadable_shard": "a shard that cannot be opened, or breaks off (a truncated download, not a tar or parquet "
    "file, columns of other types): read up to the break, the rest skipped",
}
# Each drop is logged with its file, up to this many per reason and process; the later ones are only counted.
LOGGED_DROPS = 10


class SkipCounts(Counter):
    """What the stream dropped, by reason (`SKIP_REASONS`): a `Counter` the stream adds to and the trainer logs at
    each logging step as `skipped_<reason>`. Counted in the process that iterates the stream (with
    `dataloader_num_workers > 0`, in the workers, where the trainer cannot see them)."""

    def skip(self, reason: str, source: str | None = None, error: str | None = None) -> None:
        """Counts one drop; the first `LOGGED_DROPS` of each reason are logged as warnings naming `source` (the file
        and the record's place in it) and `error` (what was wrong)."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; one of {sorted(SKIP_REASONS)}")
        self[reason] += 1
        if source is not None and self[reason] <= LOGGED_DROPS:
            later = f" (further {reason} drops are counted, not logged)" if self[reason] == LOGGED_DROPS else ""
            logger.warning(f"skipped ({reason}): {source}: {error or SKIP_REASONS[reason]}{later}")

    def as_logs(self) -> dict[str, int]:
        return {f"skipped_{reason}": self[reason] for reason in SKIP_REASONS if self[reason]}


def _as_files(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    return [str(path) for path in ([files] if isinstance(files, (str, os.PathLike)) else files)]


def _check_files_exist(files: list[str], what: str) -> None:
    """Raises for local files that do not exist (a mistyped name is no bad shard to skip); URLs are read as given."""
    missing = [file for file in files if "://" not in file and not os.path.isfile(file)]
    if missing:
        raise FileNotFoundError(f"{what} not found: {missing}")


def check_shuffle_buffer(shuffle_buffer: int) -> None:
    """Raises unless `shuffle_buffer` is a number of records, 0 or more (`datasets` reads a negative size as a buffer
    of one record repeated)."""
    if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
        raise ValueError(
            f"shuffle_buffer is a number of records shuffled together, 0 (file order) or more; got {shuffle_buffer!r}"
        )


def _skipped_record(reason: str, source: str, error: str, **columns) -> dict:
    """A record that stands for one that could not be read: counted and logged when it is decoded."""
    return {**columns, "source": source, "skip": reason, "error": error}


def _document(texts, images, source: str) -> dict:
    """A document's record from its slot lists (`None` for none); raises `ValueError` saying what a slot list must
    hold."""
    if not isinstance(texts or [], list) or not all(text is None or isinstance(text, str) for text in texts or []):
        raise ValueError(f"'texts' is a list of strings (or nulls), got {_preview(texts)}")
    if not isinstance(images or [], list):
        raise ValueError(f"'images' is a list of images (or nulls), got {_preview(images)}")
    slots = [_image_slot(image) for image in images or []]
    return {"texts": list(texts or []), "images": slots, "source": source, "skip": None, "error": None}


def _preview(value) -> str:
    text = repr(value)
    return f"a {type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


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


def _is_text_list(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and (
        pa.types.is_string(arrow_type.value_type)
        or pa.types.is_large_string(arrow_type.value_type)
        or pa.types.is_null(arrow_type.value_type)
    )


def _is_image_list(arrow_type: pa.DataType) -> bool:
    if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        return False
    value = arrow_type.value_type
    return (
        pa.types.is_binary(value)
        or pa.types.is_large_binary(value)
        or pa.types.is_string(value)
        or pa.types.is_large_string(value)
        or pa.types.is_null(value)
        or (pa.types.is_struct(value) and {"bytes", "path"} & {field.name for field in value})
    )


def document_layout_problem(file: str, columns: dict[str, str], texts_column: str, images_column: str) -> str | None:
    """What keeps a document file from OBELICS' layout (parallel lists per document: `texts_column` of strings,
    `images_column` of images), from its `columns` and whether each fits (`"ok"`) or what it is; or None."""
    if texts_column not in columns or images_column not in columns:
        return (
            f"interleaved documents have parallel {texts_column!r} and {images_column!r} lists (OBELICS layout); "
            f"{file} has the columns {list(columns)}"
        )
    wrong = [f"{name!r} is {columns[name]}" for name in (texts_column, images_column) if columns[name] != "ok"]
    if wrong:
        return (
            f"{file}: {' and '.join(wrong)}; the OBELICS layout has one list per document in each: {texts_column!r} "
            f"of strings (or nulls), {images_column!r} of images (bytes, URLs or paths, or nulls)"
        )
    return None


def _parquet_columns(schema: pa.Schema, texts_column: str, images_column: str) -> dict[str, str]:
    fits = {texts_column: _is_text_list, images_column: _is_image_list}
    return {field.name: "ok" if fits.get(field.name, bool)(field.type) else str(field.type) for field in schema}


def _record_columns(record: dict, texts_column: str, images_column: str) -> dict[str, str]:
    def kind(name, value) -> str:
        if name not in (texts_column, images_column) or value is None or isinstance(value, list):
            return "ok"
        return f"a {type(value).__name__}"

    return {name: kind(name, value) for name, value in record.items()}


def _parquet_documents(file: str, texts_column: str, images_column: str) -> Iterator[dict]:
    """The records of one parquet file, in order; a file that cannot be opened, has another layout or breaks off ends
    in a skipped record."""
    number = 0
    try:
        with fsspec.open(file, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            columns = _parquet_columns(parquet.schema_arrow, texts_column, images_column)
            problem = document_layout_problem(file, columns, texts_column, images_column)
            if problem:
                yield _skipped_record("unreadable_shard", file, problem, texts=[], images=[])
                return
            for batch in parquet.iter_batches(batch_size=64, columns=[texts_column, images_column]):
                for texts, images in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                    yield _document(texts, images, f"{file}, row {number}")
                    number += 1
    except (OSError, pa.ArrowException) as error:
        read = f"read up to row {number}" if number else "nothing read"
        error = f"not a readable parquet file ({error}); {read}"
        yield _skipped_record("unreadable_shard", file, error, texts=[], images=[])


def _json_file_records(file: str, listed: str) -> Iterator[tuple[str, object]]:
    """(place, record) of a JSONL file (`line N`, read as it is iterated; a line that is not JSON gives a
    `JSONLineError`) or of a JSON file (`row N`); raises `OSError` or `ValueError` at once for a JSON file that cannot
    be read or that is not a list (`listed`: what it should hold)."""
    if file.endswith(".jsonl"):
        return ((f"line {number}", record) for number, record in json_lines(file))
    values = read_json_records(file)
    if not isinstance(values, list):
        raise ValueError(f"{listed}, got a {type(values).__name__}")
    return ((f"row {number}", record) for number, record in enumerate(values))


def _json_documents(file: str, texts_column: str, images_column: str) -> Iterator[dict]:
    """The records of one JSONL (one per line) or JSON (a list) file; a record that does not parse or whose slots are
    not lists is skipped."""
    try:
        records = _json_file_records(file, "a JSON file of documents holds a list of them")
    except (OSError, ValueError) as error:
        yield _skipped_record("unreadable_shard", file, str(error), texts=[], images=[])
        return
    for place, record in records:
        source = f"{file}, {place}"
        try:
            if isinstance(record, JSONLineError):
                raise ValueError(record.problem)
            if not isinstance(record, dict):
                expected = f"a document is an object with {texts_column!r} and {images_column!r} lists"
                raise ValueError(f"{expected}, got {_preview(record)}")
            document = _document(record.get(texts_column), record.get(images_column), source)
        except ValueError as error:
            yield _skipped_record("bad_record", source, str(error), texts=[], images=[])
            continue
        yield document


def _document_records(files: list[str], texts_column: str, images_column: str) -> Iterator[dict]:
    for file in files:
        read = _parquet_documents if file.endswith(".parquet") else _json_documents
        yield from read(file, texts_column, images_column)


def _first_record(file: str) -> dict | None:
    """The first document of a JSONL or JSON file (None when it has none); raises when the file cannot be read."""
    if file.endswith(".jsonl"):
        for _, record in json_lines(file):
            if isinstance(record, JSONLineError):
                raise record
            return record
        return None
    values = read_json_records(file)
    return values[0] if isinstance(values, list) and values else values


def check_first_document_layout(files: list[str], texts_column: str, images_column: str) -> None:
    """Raises when the first document file that can be read does not have OBELICS' layout (its columns, or its first
    record's keys and slot types: `document_layout_problem`): every file of a corpus has its layout, and training on
    another one would be silently wrong (a string `texts` read letter by letter). Files that cannot be read are left
    to the stream, which skips them with a warning; none readable is an error."""
    unreadable = []
    for file in files:
        try:
            if file.endswith(".parquet"):
                with fsspec.open(file, "rb") as handle:
                    columns = _parquet_columns(pq.ParquetFile(handle).schema_arrow, texts_column, images_column)
            else:
                record = _first_record(file)
                if record is None:
                    continue
                if not isinstance(record, dict):
                    raise ValueError(f"{file}: a document is an object, got {_preview(record)}")
                columns = _record_columns(record, texts_column, images_column)
        except (OSError, pa.ArrowException) as error:
            unreadable.append(f"{file} ({error})")
            continue
        except JSONLineError as error:
            unreadable.append(str(error))
            continue
        problem = document_layout_problem(file, columns, texts_column, images_column)
        if problem:
            raise ValueError(problem)
        return
    if unreadable:
        raise ValueError(f"none of the interleaved document files can be read: {'; '.join(unreadable)}")


def interleaved_documents(
    data_files: str | Sequence[str], texts_column: str = "texts", images_column: str = "images"
) -> IterableDataset:
    """OBELICS / MINT-1T documents from parquet, JSONL or JSON files (one shard per file), as undecoded records.

    Parquet files are read with pyarrow, a record batch at a time (the `datasets` reader stops the stream at a file
    that is cut short, and the resumed run at the same file again). The first file's columns must be the layout's
    lists (`check_first_document_layout`); a later parquet file that is not is skipped with a warning, a later
    record that is not is dropped.
    """
    files = _as_files(data_files)
    unknown = [file for file in files if not file.endswith(DOCUMENT_FORMATS)]
    if unknown:
        raise ValueError(f"interleaved documents come in {', '.join(DOCUMENT_FORMATS)} files, got {unknown}")
    _check_files_exist(files, "interleaved document files")
    check_first_document_layout(files, texts_column, images_column)
    return IterableDataset.from_generator(
        _document_records,
        gen_kwargs={"files": files, "texts_column": texts_column, "images_column": images_column},
        features=RECORD_FEATURES,
    )


def _image_member(sample: dict) -> bytes | None:
    """The image of a webdataset sample: its first member whose extension Pillow reads (`.jpg`, `.png`, `.webp`,
    `.bmp`, `.tif`, ...)."""
    extensions = Image.registered_extensions()
    names = sorted(
        key for key in sample if not key.startswith("__") and f".{key.rsplit('.', 1)[-1].lower()}" in extensions
    )
    return sample[names[0]] if names else None


def _caption(sample: dict) -> str | None:
    """The caption of a webdataset sample: its `.txt`, or `caption` / `text` of its `.json`. Raises `ValueError` for
    a `.txt` that is not UTF-8 or a `.json` that is not a JSON object."""
    if "txt" in sample:
        return sample["txt"].decode("utf-8")
    if "json" in sample:
        meta = json.loads(sample["json"])
        if not isinstance(meta, dict):
            raise ValueError(f"the .json member holds a {type(meta).__name__}, expected an object")
        return next((meta[key] for key in ("caption", "text") if isinstance(meta.get(key), str)), None)
    return None


def _caption_record(sample: dict) -> dict:
    source = f"{sample.get('__url__')}, key {sample.get('__key__')!r}"
    try:
        caption = _caption(sample)
    except ValueError as error:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        return _skipped_record("bad_record", source, f"the caption cannot be read ({error})", texts=[], images=[])
    # A sample without an image keeps an empty slot: it is dropped and counted as `missing_image`.
    image = {"bytes": _image_member(sample), "path": None}
    return {"texts": [None, caption], "images": [image, None], "source": source, "skip": None, "error": None}


def _shard_records(shard: str) -> Iterator[dict]:
    """The records of one webdataset shard; a shard that cannot be opened or breaks off (a truncated download) is read
    up to the break and ends in a skipped record naming it."""
    errors = []

    def note_and_go_on(error: Exception) -> bool:
        errors.append(error)
        return True

    # No node or worker splitting inside webdataset: datasets hands each generator call this process's files.
    samples = webdataset.WebDataset(
        [shard], shardshuffle=False, nodesplitter=None, workersplitter=None, handler=note_and_go_on, empty_check=False
    )
    read = 0
    for sample in samples:
        read += 1
        yield _caption_record(sample)
    if errors:
        cause = f"{type(errors[0]).__name__}: {errors[0].args[0] if errors[0].args else errors[0]}"
        error = f"not a readable tar file, or it breaks off ({cause}); {read} sample{'' if read == 1 else 's'} read"
        yield _skipped_record("unreadable_shard", shard, error, texts=[], images=[])


def _webdataset_records(shards: list[str]) -> Iterator[dict]:
    for shard in shards:
        yield from _shard_records(shard)


def webdataset_captions(shards: str | Sequence[str]) -> IterableDataset:
    """Caption pairs from webdataset tar shards (one `datasets` shard per tar), as undecoded records: the image of
    each key (any extension Pillow reads: `.jpg`, `.png`, `.webp`, ...) and its caption (`.txt`, or `caption` /
    `text` in `.json`)."""
    shards = _as_files(shards)
    _check_files_exist(shards, "caption shards")
    return IterableDataset.from_generator(_webdataset_records, gen_kwargs={"shards": shards}, features=RECORD_FEATURES)


class DecodeRecord:
    """Turns an undecoded record into a document row, decoding its images and counting (and logging, with the file)
    what it drops."""

    def __init__(self, counts: SkipCounts, allow_image_urls: bool = False, image_root: str | None = None):
        self.counts, self.allow_image_urls, self.image_root = counts, allow_image_urls, image_root

    def __call__(self, record: dict) -> dict:
        texts, slots, source = record["texts"], record["images"], record["source"]
        if record["skip"]:
            self.counts.skip(record["skip"], source, record["error"])
            return {"text": None, "images": []}
        if not any(texts):
            self.counts.skip("no_text", source)
            return {"text": None, "images": []}
        decoded = [None if slot is None else self.decode(slot, source) for slot in slots]
        if any(slot is not None for slot in slots) and all(image is None for image in decoded):
            # A caption pair without its image is no pair; a document that lost every image is not the document.
            self.counts.skip("no_image_left", source)
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

    def decode(self, slot: dict, source: str | None = None) -> Image.Image | None:
        data, path = slot["bytes"], slot["path"]
        if data is None and path and path.startswith(("http://", "https://")):
            if not self.allow_image_urls:
                self.counts.skip("url_image", source, f"the image {path} is a URL and allow_image_urls is off")
                return None
            try:
                return load_image(path, timeout=10)
            except Exception as error:  # any network or decoding failure of a fetched image drops that image
                self.counts.skip("download_failed", source, f"{path}: {error}")
                return None
        if data is None:
            if not path or not os.path.isfile(os.path.join(self.image_root or "", path)):
                self.counts.skip("missing_image", source, f"no image file {path}" if path else "no image")
                return None
            data = Path(self.image_root or "", path).read_bytes()
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
            self.counts.skip("undecodable_image", source, f"an image does not decode ({error})")
            return None
        return image


def _record_files(stream: IterableDataset, files: list[str]) -> IterableDataset:
    """Records in the stream's `info.download_checksums` (the `datasets` field for the files a dataset was built from)
    the files it reads and their sizes, so that a resumed run can tell that they changed (`stream_files`)."""
    stream.info.download_checksums = {
        file: {"num_bytes": os.path.getsize(file) if "://" not in file else None, "checksum": None} for file in files
    }
    return stream


def stream_files(stream) -> dict[str, int | None] | None:
    """The files a stream of this module reads and their sizes in bytes; None for another dataset."""
    checksums = getattr(getattr(stream, "info", None), "download_checksums", None)
    return {file: entry.get("num_bytes") for file, entry in checksums.items()} if checksums else None


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
    """Document rows from interleaved-document files (`.parquet`, `.jsonl`, `.json`) and caption shards (`.tar`): the
    two kinds interleaved (`probabilities`, by default in turn; each record once, until every source is exhausted),
    records shuffled in a `shuffle_buffer` (0: in file order) with `seed`, then decoded (`DecodeRecord`; what it
    drops is counted in `counts`).

    Relative image paths in documents are read from `image_root` (default: the first document file's folder).
    """
    files = _as_files(files)
    check_shuffle_buffer(shuffle_buffer)
    if not files:
        raise ValueError("no data files for the pretraining stream")
    tars = [file for file in files if file.endswith(".tar")]
    documents = [file for file in files if not file.endswith(".tar")]
    unknown = [file for file in documents if not file.endswith(DOCUMENT_FORMATS)]
    if unknown:
        raise ValueError(f"pretraining streams read .parquet, .jsonl, .json and .tar files, got {unknown}")
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
    rows = stream.map(decode, remove_columns=["texts", "source", "skip", "error"]).filter(
        lambda row: row["text"] is not None
    )
    return _record_files(rows, files)


def _json_rows(files: list[str]) -> Iterator[dict]:
    for file in files:
        try:
            records = _json_file_records(file, "a JSON dataset is a list of rows")
        except (OSError, ValueError) as error:
            yield {"row": None, "source": file, "skip": "unreadable_shard", "error": str(error)}
            continue
        for place, record in records:
            if isinstance(record, dict):
                row = {**resolve_image_paths(record, Path(file).parent), "__url__": file, "__key__": place}
                yield {"row": json.dumps(row), "source": f"{file}, {place}", "skip": None, "error": None}
            else:
                error = (
                    record.problem
                    if isinstance(record, JSONLineError)
                    else f"a {type(record).__name__}, not an object"
                )
                yield {"row": None, "source": f"{file}, {place}", "skip": "bad_record", "error": error}


class DecodeRow:
    """Turns a record of `row_stream` into its row, counting (and logging, with the file) the records it drops: those
    that could not be read, and rows naming an image by URL while `allow_image_urls` is off (the collator would
    download it)."""

    def __init__(self, counts: SkipCounts, allow_image_urls: bool = False):
        self.counts, self.allow_image_urls = counts, allow_image_urls

    def __call__(self, record: dict) -> dict:
        if record["skip"]:
            self.counts.skip(record["skip"], record["source"], record["error"])
            return {"row": None}
        row = json.loads(record["row"])
        urls = image_urls(row)
        if urls and not self.allow_image_urls:
            error = f"the row names images by URL ({', '.join(urls[:2])}) and allow_image_urls is off"
            self.counts.skip("url_image", record["source"], error)
            return {"row": None}
        return {"row": row}


def row_stream(
    files: str | Sequence[str],
    *,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    counts: SkipCounts | None = None,
    allow_image_urls: bool = False,
) -> IterableDataset:
    """Rows of JSON / JSONL files in the formats of `rows.py` (relative image paths resolved against each file's
    folder), one shard per file, shuffled in a `shuffle_buffer` (0: in file order) with `seed`. A file is read when
    its shard starts. Each row keeps where it was read (`rows.SOURCE_KEYS`: its file, and its line or place). Lines
    that are not JSON objects, files that cannot be read, and (unless `allow_image_urls`) rows naming an image by URL
    are dropped and counted in `counts`."""
    files = _as_files(files)
    check_shuffle_buffer(shuffle_buffer)
    _check_files_exist(files, "dataset files")
    stream = IterableDataset.from_generator(_json_rows, gen_kwargs={"files": files}, features=ROW_FEATURES)
    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    decode = DecodeRow(counts if counts is not None else SkipCounts(), allow_image_urls)
    rows = stream.map(decode, remove_columns=["source", "skip", "error"]).filter(
        lambda record: record["row"] is not None
    )
    return _record_files(rows.map(lambda record: record["row"], remove_columns=["row"]), files)


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
    (`load_rows`), or streamed with `streaming=True` (`row_stream`). Rows read into memory that name an image by URL
    are refused unless `allow_image_urls` (a training file could otherwise make the trainer contact any host).
    """
    files = [str(file) for file in files]
    check_shuffle_buffer(shuffle_buffer)
    counts = SkipCounts()
    if any(file.endswith(tuple(STREAM_FORMATS)) for file in files):
        stream = pretraining_stream(
            files, seed=seed, shuffle_buffer=shuffle_buffer, counts=counts, allow_image_urls=allow_image_urls
        )
        return stream, counts
    if streaming:
        return row_stream(
            files, seed=seed, shuffle_buffer=shuffle_buffer, counts=counts, allow_image_urls=allow_image_urls
        ), counts
    rows = load_rows(*files)
    if not allow_image_urls:
        named = [(index, urls) for index, row in enumerate(rows) if (urls := image_urls(row))]
        if named:
            listed = "; ".join(f"row {index}: {urls[0]}" for index, urls in named[:3])
            raise ValueError(
                f"{len(named)} training rows name images by URL ({listed}); pass --allow_image_urls true to download "
                "them, or give the images as files"
            )
    return rows, None


__all__ = [
    "SKIP_REASONS",
    "DecodeRecord",
    "DecodeRow",
    "SkipCounts",
    "check_shuffle_buffer",
    "interleaved_documents",
    "load_training_data",
    "pretraining_stream",
    "row_stream",
    "stream_files",
    "webdataset_captions",
]
