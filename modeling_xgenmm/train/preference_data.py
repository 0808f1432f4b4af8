# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Preference rows from the public VLFeedback and VLGuard datasets, in TRL's vision preference format
`{"id", "images", "prompt", "chosen", "rejected"}` (conversational, one image, the image first in the user turn).

The rules, which the xGen-MM (BLIP-3) report describes only in words, are stated here and in the
docstrings below.

VLFeedback (`MMInstruction/VLFeedback`, `vlfeedback_80k.jsonl`: `id`, `prompt`, `completions` of `{"model",
"response", "annotations": {aspect: {"Rating", "Rationale"}}}`, and the image as `img_path`, `image`, or
`<images_dir>/<id>.jpg` as in `merged_images.zip`): as in the report, the chosen response is the one with the highest
average rating across the annotated aspects and the rejected one the lowest; rows whose chosen response rates low are
dropped. Details the report leaves open: ratings that are not numbers are ignored, ties go to the earlier
completion, rows with fewer than two rated completions or equal best and worst averages carry no preference and are
dropped, and "low" means an average below `min_chosen_score` (3 on the 1-5 scale by default).

VLGuard (`ys-zong/VLGuard`, `train.json`: `id`, `image` (relative to the images folder), `safe`, and `instr-resp`:
`[{"instruction", "response"}]` for an unsafe image, `[{"safe_instruction", "response"}, {"unsafe_instruction",
"response"}]` for a safe one). VLGuard has one response per instruction, so the other side of each pair is built:

- a safe instruction: chosen = its answer; rejected = the refusal VLGuard gives to the same image's unsafe
  instruction (it teaches the model not to over-refuse benign questions);
- an unsafe instruction (on a safe or an unsafe image): chosen = VLGuard's refusal; rejected = a response that
  complies, from `compliant_response(instruction, row)` when given (e.g. the model's own answer before safety
  tuning); without it, on a safe image, the answer VLGuard gives to that image's safe instruction (engaging with the
  image instead of declining), and on an unsafe image the pair is skipped (VLGuard holds no compliant text there).

The report itself safety-tunes with supervised fine-tuning on VLGuard plus instruction data; the preference form
here makes the same data usable in the DPO stage.
"""

import io
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image
from transformers.utils import logging

from ..checkpoint.contents import IMAGE_TOKEN
from .rows import read_json_records


logger = logging.get_logger(__name__)

VLFEEDBACK_ASPECTS = ("Helpfulness", "Visual Faithfulness", "Ethical Considerations")


def preference_row(row_id: str, image, instruction: str, chosen: str, rejected: str) -> dict:
    """One TRL vision preference row: the image first in the user turn (or at the instruction's `<image>` marker)."""
    content = [{"type": "text", "text": instruction}]
    if IMAGE_TOKEN not in instruction:
        content.insert(0, {"type": "image"})
    return {
        "id": row_id,
        "images": [image],
        "prompt": [{"role": "user", "content": content}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
    }


def _image(value, folder: Path | None):
    """A PIL image or a path: PIL images and paths pass; `datasets`' `{"bytes", "path"}` dicts are decoded; relative
    paths are taken relative to `folder`."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        value = value.get("path")
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        return str(path if path.is_absolute() or folder is None else folder / path)
    return value


def rating_average(completion: dict, aspects: Iterable[str] = VLFEEDBACK_ASPECTS) -> float | None:
    """Mean of the numeric `Rating`s of a VLFeedback completion over `aspects`; `None` when none is a number."""
    annotations = completion.get("annotations") or {}
    ratings = []
    for aspect in aspects:
        try:
            rating = float((annotations.get(aspect) or {}).get("Rating"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(rating):
            ratings.append(rating)
    return sum(ratings) / len(ratings) if ratings else None


class PreferenceRows(list):
    """The preference rows a loader made (a list), with `dropped`: how many source records gave no row, by reason."""

    def __init__(self, rows=(), dropped: Counter | None = None):
        super().__init__(rows)
        self.dropped = Counter() if dropped is None else dropped

    def summarize(self, name: str, expected: str) -> None:
        """Logs how many rows were made and, as a warning, the records dropped by reason; raises `ValueError` when
        every record was dropped (a run would train on nothing), with the reasons and `expected`, what a record
        needs."""
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.dropped.most_common())
        if self.dropped and not self:
            raise ValueError(
                f"{name}: none of the {self.dropped.total()} records gave a preference row ({reasons}); {expected}"
            )
        logger.info(f"{name}: {len(self)} preference rows")
        if self.dropped:
            logger.warning(f"{name}: records dropped: {reasons}")


def _vlfeedback_preference(row: dict, images_dir, min_chosen_score: float) -> dict | str:
    """The preference row of one VLFeedback row, or the reason it has none; raises `ValueError` when malformed."""
    row_id = str(row.get("id"))
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise ValueError(f"VLFeedback row {row_id!r}: 'prompt' is a non-empty string, got {row.get('prompt')!r}")
    folder = Path(images_dir) if images_dir is not None else None
    if row.get("image") is not None:
        image = _image(row["image"], folder)
    elif row.get("img_path"):
        image = _image(row["img_path"], folder)
    elif folder is not None:
        image = str(folder / f"{row_id}.jpg")
    else:
        raise ValueError(
            f"VLFeedback row {row_id!r} has no image: expected 'image', 'img_path', or an images_dir holding "
            f"{row_id}.jpg"
        )
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise ValueError(f"VLFeedback row {row_id!r}: 'completions' is a list, got {type(completions).__name__}")
    scored = []
    for completion in completions:
        if not isinstance(completion, dict):
            raise ValueError(f"VLFeedback row {row_id!r}: a completion is {completion!r:.80}, expected an object")
        score = rating_average(completion)
        response = completion.get("response")
        if score is not None and isinstance(response, str) and response.strip():
            scored.append((score, response))
    if len(scored) < 2:
        return "with fewer than two rated, non-empty responses"
    chosen = max(scored, key=lambda item: item[0])
    rejected = min(scored, key=lambda item: item[0])
    if chosen[0] <= rejected[0]:
        return "whose best and worst responses rate the same"
    if chosen[0] < min_chosen_score:
        return f"whose best response rates below {min_chosen_score:g}"
    if chosen[1].strip() == rejected[1].strip():
        return "whose best and worst responses are the same text"
    return preference_row(row_id, image, row["prompt"], chosen[1], rejected[1])


def vlfeedback_preference_row(
    row: dict, images_dir: str | os.PathLike | None = None, min_chosen_score: float = 3.0
) -> dict | None:
    """The preference row of one VLFeedback row (module docstring), or `None` when the row carries no usable
    preference. Raises `ValueError` naming the row when it has no image, no prompt or malformed completions."""
    converted = _vlfeedback_preference(row, images_dir, min_chosen_score)
    return None if isinstance(converted, str) else converted


def vlfeedback_preference_rows(
    rows: Iterable[dict], images_dir: str | os.PathLike | None = None, min_chosen_score: float = 3.0
) -> PreferenceRows:
    """Preference rows of VLFeedback rows (`vlfeedback_preference_row`); rows without a preference are dropped and
    counted by reason (`PreferenceRows.dropped`, and logged as a warning). Raises `ValueError` when every row is
    dropped (e.g. annotations whose aspect names are spelled otherwise: none is rated)."""
    preference_rows = PreferenceRows()
    for row in rows:
        converted = _vlfeedback_preference(row, images_dir, min_chosen_score)
        if isinstance(converted, str):
            preference_rows.dropped[f"records {converted}"] += 1
        else:
            preference_rows.append(converted)
    expected = (
        "a record needs two responses rated in their annotations' "
        f"{', '.join(repr(aspect) for aspect in VLFEEDBACK_ASPECTS)} (key names as written here) with a 'Rating', "
        f"the best averaging at least min_chosen_score={min_chosen_score:g} and above the worst"
    )
    preference_rows.summarize("VLFeedback", expected)
    return preference_rows


def read_records(path: str | os.PathLike, name: str) -> list:
    """The records of a JSON list or JSONL file (`read_json_records`); errors name the file (and the line of a JSONL
    file)."""
    records = read_json_records(path, name)
    if not isinstance(records, list):
        raise ValueError(f"{path}: {name} data is a JSON list of records, got a {type(records).__name__}")
    return records


def _in_file(path, records: list, convert: Callable[[list], PreferenceRows]) -> PreferenceRows:
    """`convert(records)`, with the file and the record number added to the message of a malformed record."""
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}, record {number}: an object is expected, got {record!r:.80}")
    try:
        return convert(records)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_vlfeedback(
    path: str | os.PathLike, images_dir: str | os.PathLike | None = None, min_chosen_score: float = 3.0
) -> PreferenceRows:
    """Preference rows from a VLFeedback JSONL (or JSON list) file. Image paths are relative to `images_dir`, by
    default the file's folder; without `image`/`img_path`, the image is `<images_dir>/<id>.jpg`. Records without a
    usable preference are dropped and counted (`dropped`); a malformed record raises naming the file and record."""
    records = read_records(path, "VLFeedback")
    folder = images_dir if images_dir is not None else Path(path).parent
    return _in_file(path, records, lambda rows: vlfeedback_preference_rows(rows, folder, min_chosen_score))


def vlguard_preference_rows(
    rows: Iterable[dict],
    images_dir: str | os.PathLike | None = None,
    compliant_response: Callable[[str, dict], str | None] | None = None,
) -> PreferenceRows:
    """Preference rows of VLGuard rows, by the rule of the module docstring. `compliant_response(instruction, row)`
    gives the rejected (complying) response to an unsafe instruction; returning `None` falls back to the rule's
    default. Ids are `<id>/safe`, `<id>/unsafe`. Raises `ValueError` naming the row when it is malformed; pairs
    that cannot be made are counted by reason (`PreferenceRows.dropped`, and logged as a warning); none made from any
    row raises `ValueError`."""
    folder = Path(images_dir) if images_dir is not None else None
    preference_rows = PreferenceRows()
    for row in rows:
        row_id = str(row.get("id"))
        pairs = row.get("instr-resp")
        well_formed = row.get("image") is not None and isinstance(row.get("safe"), bool)
        if not well_formed or not isinstance(pairs, list) or not pairs:
            raise ValueError(f"VLGuard row {row_id!r}: expected 'image', a boolean 'safe' and a list 'instr-resp'")
        image = _image(row["image"], folder)
        by_kind = {}
        for pair in pairs:
            kinds = [key for key in ("instruction", "safe_instruction", "unsafe_instruction") if key in pair]
            if len(kinds) != 1 or not isinstance(pair.get("response"), str):
                raise ValueError(f"VLGuard row {row_id!r}: an instr-resp entry is {pair!r}")
            by_kind[kinds[0]] = (pair[kinds[0]], pair["response"])
        safe, unsafe = by_kind.get("safe_instruction"), by_kind.get("unsafe_instruction", by_kind.get("instruction"))
        if row["safe"] and safe is not None and unsafe is not None:
            if safe[1].strip() and unsafe[1].strip() and safe[1].strip() != unsafe[1].strip():
                preference_rows.append(preference_row(f"{row_id}/safe", image, safe[0], safe[1], unsafe[1]))
            else:
                preference_rows.dropped["safe instructions whose answer and refusal are empty or the same"] += 1
        if unsafe is not None:
            rejected = compliant_response(unsafe[0], row) if compliant_response is not None else None
            if rejected is None and safe is not None:
                rejected = safe[1]
            if rejected is None:
                preference_rows.dropped["unsafe instructions without a compliant response to reject"] += 1
            elif not rejected.strip() or not unsafe[1].strip() or rejected.strip() == unsafe[1].strip():
                preference_rows.dropped["unsafe instructions whose refusal and compliance are empty or the same"] += 1
            else:
                preference_rows.append(preference_row(f"{row_id}/unsafe", image, unsafe[0], unsafe[1], rejected))
    preference_rows.summarize(
        "VLGuard",
        "a safe instruction needs an answer and the image's refusal to differ; an unsafe one a compliant response "
        "to reject (compliant_response, or the image's safe answer)",
    )
    if preference_rows.dropped["unsafe instructions without a compliant response to reject"]:
        logger.warning(
            f"VLGuard: {preference_rows.dropped['unsafe instructions without a compliant response to reject']} unsafe "
            "instructions skipped for want of a compliant response to reject (pass compliant_response to use them)"
        )
    return preference_rows


def load_vlguard(
    path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    compliant_response: Callable[[str, dict], str | None] | None = None,
) -> PreferenceRows:
    """Preference rows from VLGuard's `train.json` (a JSON list); image paths are relative to `images_dir`, by
    default the file's folder. Pairs that cannot be made are counted (`dropped`); a malformed record raises naming
    the file and the record."""
    records = read_records(path, "VLGuard")
    folder = images_dir if images_dir is not None else Path(path).parent
    return _in_file(path, records, lambda rows: vlguard_preference_rows(rows, folder, compliant_response))


__all__ = [
    "VLFEEDBACK_ASPECTS",
    "PreferenceRows",
    "load_vlfeedback",
    "load_vlguard",
    "preference_row",
    "rating_average",
    "vlfeedback_preference_row",
    "vlfeedback_preference_rows",
    "vlguard_preference_rows",
]
