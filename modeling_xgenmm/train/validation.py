# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Training rows checked before a run starts, so that a long run does not die hours in on a bad row."""

from collections import Counter
from collections.abc import Sequence

from transformers.utils import logging

from .collators import BAD_SAMPLE_ERRORS, BadSampleError, XGenMMDataCollator
from .rows import describe_row


logger = logging.get_logger(__name__)


def validate_rows(rows: Sequence[dict], collator: XGenMMDataCollator) -> Sequence[dict]:
    """Checks every row with `collator.check` (no pixel is decoded). With `on_bad_sample="raise"` (the default) a bad
    row raises `BadSampleError` naming the first bad rows and their number; with `"skip"` the good rows are returned
    (a list) and the bad ones are counted by reason in the log, unless every row is bad (`BadSampleError`: nothing to
    train on). Rows without bad ones are returned as they are."""
    bad = []
    for index in logging.tqdm(range(len(rows)), desc="Checking training rows", disable=len(rows) < 10_000):
        row = rows[index]
        try:
            collator.check(row)
        except BAD_SAMPLE_ERRORS as error:
            bad.append((index, describe_row(row), str(error)))
    if not bad:
        return rows
    listed = "; ".join(f"row {index} ({name}): {reason}" for index, name, reason in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    if collator.on_bad_sample == "raise":
        raise BadSampleError(
            f"{len(bad)} of {len(rows)} training rows are bad, found before training: {listed}{more}. Fix them, or "
            "pass on_bad_sample='skip' (--on_bad_sample skip) to train without them"
        )
    if len(bad) == len(rows):
        raise BadSampleError(
            f"all {len(rows)} training rows are bad, found before training, so there is nothing to train on: "
            f"{listed}{more}"
        )
    reasons = Counter(reason.split(":")[0] for _, _, reason in bad)
    logger.warning(
        f"skipping {len(bad)} of {len(rows)} training rows found bad before training: "
        + "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common())
    )
    skipped = {index for index, _, _ in bad}
    return [rows[index] for index in range(len(rows)) if index not in skipped]


__all__ = ["validate_rows"]
