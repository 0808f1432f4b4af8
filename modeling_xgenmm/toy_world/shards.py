# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The toy world's pretraining corpus in the layouts web-scale corpora ship in, so that its pretraining stage reads
through the streaming path (`modeling_xgenmm.train.streaming`) as a real run would: caption pairs as webdataset tar
shards (`<key>.png` + `<key>.txt`, written with the `webdataset` library) and interleaved documents as OBELICS-layout
parquet files (parallel `texts` / `images` lists, PNG bytes)."""

import io
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset
from PIL import Image

from ..checkpoint.contents import END_OF_CHUNK_TOKEN, IMAGE_TOKEN


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_caption_shards(rows: Sequence[dict], folder: Path, shards: int) -> list[Path]:
    """Caption rows `{"image", "caption"}` as `shards` webdataset tar files, rows dealt out in turn."""
    paths = [folder / f"captions-{shard:05d}.tar" for shard in range(shards)]
    writers = [webdataset.TarWriter(str(path)) for path in paths]
    try:
        for index, row in enumerate(rows):
            writers[index % shards].write({"__key__": f"{index:08d}", "png": row["image"], "txt": row["caption"]})
    finally:
        for writer in writers:
            writer.close()
    return paths


def obelics_slots(row: dict) -> dict:
    """A document row `<image>caption<|endofchunk|>...` as OBELICS' parallel slots: an image slot, then its text."""
    texts, images = [], []
    chunks = row["text"].split(END_OF_CHUNK_TOKEN)
    for chunk, image in zip(chunks, row["images"], strict=False):
        if not chunk.startswith(IMAGE_TOKEN):
            raise ValueError(f"a toy-world document chunk starts with its image, got {chunk!r}")
        texts += [None, chunk[len(IMAGE_TOKEN) :]]
        images += [png_bytes(image), None]
    return {"texts": texts, "images": images}


def write_document_parquet(rows: Sequence[dict], folder: Path, files: int) -> list[Path]:
    """Document rows as `files` OBELICS-layout parquet files, rows dealt out in turn."""
    paths = []
    for part in range(files):
        documents = [obelics_slots(rows[index]) for index in range(part, len(rows), files)]
        table = pa.table(
            {
                "texts": pa.array([document["texts"] for document in documents], pa.list_(pa.string())),
                "images": pa.array([document["images"] for document in documents], pa.list_(pa.binary())),
            }
        )
        paths.append(folder / f"documents-{part:05d}.parquet")
        pq.write_table(table, paths[-1])
    return paths


__all__ = ["obelics_slots", "write_caption_shards", "write_document_parquet"]
