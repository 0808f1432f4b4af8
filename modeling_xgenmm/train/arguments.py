# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""What the example scripts take besides the training config and `XGenMMModelConfig`: the data."""

from dataclasses import dataclass, field


@dataclass
class DataArguments:
    """Training rows from JSON / JSONL files (formats in `modeling_xgenmm.train.rows`)."""

    data: list[str] = field(
        metadata={"help": "JSON / JSONL files of training rows (image paths relative to the file)."}
    )


@dataclass
class PreferenceDataArguments(DataArguments):
    """Preference datasets as published (VLFeedback, VLGuard), with their image folder."""

    images_dir: str | None = field(default=None, metadata={"help": "Image folder; default: the data file's folder."})


__all__ = ["DataArguments", "PreferenceDataArguments"]
