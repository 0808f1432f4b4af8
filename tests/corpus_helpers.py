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


def write_parquet_cut_short(path: Path, documents: list[dict]) -> Path:
    """A parquet file broken off halfway, as an interrupted download leaves it (no footer)."""
    write_obelics_parquet(path, documents)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_tar_cut_in_a_member(path: Path, samples: list[tuple[str, dict[str, bytes]]], member: int = 2) -> Path:
    """A tar shard that breaks off inside the data of its `member`-th member: the members before it are whole."""
    write_tar_shard(path, samples)
    with tarfile.open(path) as tar:
        cut = tar.getmembers()[member]
        end = cut.offset_data + cut.size // 2
    path.write_bytes(path.read_bytes()[:end])
    return path


def bad_web_corpus(folder: Path) -> tuple[list[Path], list[str], dict[str, int]]:
    """Caption shards and document files with one bad record or shard of each kind, among good ones: (files, the
    texts of the good rows a reader yields, the drops it counts by reason)."""
    eoc = "<|endofchunk|>"
    png = [image_bytes(seed) for seed in range(8)]
    files = [
        write_tar_shard(folder / "caps-good.tar", [
            ("g0", {"png": png[0], "txt": b"Good zero."}),
            ("g1", {"bmp": image_bytes(1, format="BMP"), "txt": b"A bitmap."}),
            ("g2", {"gif": image_bytes(2, format="GIF"), "json": json.dumps({"caption": "A gif."}).encode()}),
        ]),
        write_tar_shard(folder / "caps-bad-records.tar", [
            ("b0", {"png": png[3], "json": b"{not json"}),
            ("b1", {"png": png[4], "txt": b"\xff\xfe not utf-8"}),
            ("b2", {"png": png[5], "txt": b"Kept."}),
        ]),
        write_tar_cut_in_a_member(folder / "caps-cut.tar", [
            ("c0", {"png": png[6], "txt": b"Before the cut."}),
            ("c1", {"png": png[7], "txt": b"Cut off."}),
        ]),
        folder / "not-a-tar.tar",
        write_obelics_parquet(folder / "docs-good.parquet", [{"texts": [None, "Docs."], "images": [png[0], None]}]),
        write_parquet_cut_short(folder / "docs-cut.parquet", [{"texts": ["Lost."], "images": [None]}] * 50),
        folder / "docs-empty.parquet",
        folder / "docs.jsonl",
    ]  # fmt: skip
    files[3].write_bytes(b"this is no tar archive " * 40)
    files[6].write_bytes(b"")
    files[7].write_text(
        json.dumps({"texts": ["A line."], "images": [None]}) + "\n{oops\n" + json.dumps({"texts": "a string"}) + "\n"
    )
    texts = [
        f"<image>Good zero.{eoc}", f"<image>A bitmap.{eoc}", f"<image>A gif.{eoc}", f"<image>Kept.{eoc}",
        f"<image>Before the cut.{eoc}", f"<image>Docs.{eoc}", "A line.",
    ]  # fmt: skip
    # The caption that is not JSON and the one that is not UTF-8, the JSONL line that is not JSON and the one whose
    # texts are a string; the shard cut in a member, the file that is no tar, the parquet cut short and the empty one.
    return files, texts, {"bad_record": 4, "unreadable_shard": 4}
