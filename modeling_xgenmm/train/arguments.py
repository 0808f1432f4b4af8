# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""What the example scripts take besides the training config and `XGenMMModelConfig`: the data."""

from dataclasses import dataclass, field


@dataclass
class DataArguments:
    """Training rows from JSON / JSONL files (formats in `modeling_xgenmm.train.rows`), or web-corpus shards
    (`.parquet` OBELICS-style documents, `.tar` webdataset caption shards), which are always streamed
    (`modeling_xgenmm.train.streaming`)."""

    data: list[str] = field(
        metadata={
            "help": "JSON / JSONL files of training rows (image paths relative to the file), or .parquet / .tar "
            "web-corpus shards (streamed)."
        }
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream JSON / JSONL rows file by file instead of loading them (max_steps)."}
    )
    shuffle_buffer: int = field(
        default=1000, metadata={"help": "Records shuffled together in a stream (0: file order); seeded by --seed."}
    )
    allow_image_urls: bool = field(
        default=False, metadata={"help": "Fetch images that a streamed corpus names by URL (off: skipped, counted)."}
    )


@dataclass
class PreferenceDataArguments(DataArguments):
    """Preference datasets as published (VLFeedback, VLGuard), with their image folder."""

    images_dir: str | None = field(default=None, metadata={"help": "Image folder; default: the data file's folder."})


__all__ = ["DataArguments", "PreferenceDataArguments"]
