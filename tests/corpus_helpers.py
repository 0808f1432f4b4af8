"""Web-corpus files for the streaming tests, written with tarfile and pyarrow directly (not with the package):
webdataset tar shards and OBELICS-layout parquet / JSONL documents, with broken and missing images on purpose."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from processing_helpers import synthetic_image


def image_bytes(seed: int, size=(24, 16), format="PNG") -> bytes:
    buffer = io.BytesIO()
    synthetic_image("RGB", *size, seed=seed).save(buffer, format=format)
    return buffer.getvalue()


def pixels(image: Image.Image | bytes) -> np.ndarray:
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    return np.asarray(image.convert("RGB"))


def write_tar_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """A webdataset shard: for each (key, {extension: bytes}) one tar member `<key>.<extension>` per entry."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def write_obelics_parquet(path: Path, documents: list[dict]) -> Path:
    """OBELICS' layout: parallel `texts` (string or null) and `images` (bytes or null) lists per document."""
    table = pa.table(
        {
            "texts": pa.array([document["texts"] for document in documents], pa.list_(pa.string())),
            "images": pa.array([document["images"] for document in documents], pa.list_(pa.binary())),
        }
    )
    pq.write_table(table, path)
    return path


def write_obelics_jsonl(path: Path, documents: list[dict]) -> Path:
    """The JSONL form (images as URLs or paths)."""
    path.write_text("".join(json.dumps(document) + "\n" for document in documents))
    return path
