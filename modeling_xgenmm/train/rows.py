# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Training rows: the formats the xGen-MM collators and recipes accept, and reading them from JSON / JSONL files.

Row formats (images are PIL images or paths, in the order of their markers):

- conversation: `{"messages": [{"role": "system" | "user" | "assistant", "content": str | blocks}], "images": [...]}`,
  the transformers/TRL chat format. `blocks` are `{"type": "text", "text": ...}` and `{"type": "image"}`; the k-th
  image block without a payload of its own takes the k-th entry of `images` (`"image"` is accepted for one image).
  A string content may hold `<image>` markers, which become image blocks.
- LLaVA conversation: `{"conversations": [{"from": "human" | "gpt" | "system", "value": "...<image>..."}],
  "image": path or [paths]}`.
- interleaved document (pretraining): `{"text": "...<image>...<|endofchunk|><image>...", "images": [...]}`.
- caption pair (pretraining): `{"image": image, "caption": str}`, trained as `<image>{caption}<|endofchunk|>`.
- preference (DPO): `{"images": [...], "prompt": messages or str, "chosen": ..., "rejected": ...}`, TRL's vision
  preference format (see `normalize_preference_row`).

An optional `"id"` names the row in error messages.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from ..checkpoint.contents import END_OF_CHUNK_TOKEN, IMAGE_TOKEN


ROW_KINDS = ("conversation", "document", "caption")
# The recipe's stages on `transformers.Trainer` and the row kinds each takes (a caption pair in SFT is an error).
STAGES = {
    "pretrain": ("document", "caption"),
    "sft": ("conversation",),
    "interleaved_sft": ("conversation",),
}
LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def row_kind(row: Any) -> str:
    """`"conversation"` (messages or LLaVA conversations), `"document"` (interleaved text) or `"caption"`."""
    if not isinstance(row, dict):
        raise TypeError(f"a training row is a dict, got a {type(row).__name__}")
    if "messages" in row or "conversations" in row:
        return "conversation"
    if "text" in row:
        return "document"
    if "caption" in row:
        return "caption"
    raise ValueError(
        f"unknown row format with keys {sorted(row)}: expected 'messages' or 'conversations' (conversation), "
        "'text' (interleaved document) or 'image' + 'caption' (caption pair)"
    )


# Where a streamed row was read, as the `webdataset` convention names a sample's origin: its file and its place in it.
SOURCE_KEYS = ("__url__", "__key__")


def describe_row(row: Any) -> str:
    """A short name for a row in messages: its `id`, else the start of its text; a streamed row adds where it was read
    (its file and line, `SOURCE_KEYS`)."""
    if isinstance(row, dict) and row.get("__url__") is not None:
        plain = {key: value for key, value in row.items() if key not in SOURCE_KEYS}
        return f"{describe_row(plain)}, {row['__url__']} {row.get('__key__') or ''}".rstrip()
    if isinstance(row, dict) and row.get("id") is not None:
        return f"id {row['id']!r}"
    if not isinstance(row, dict):
        return f"a {type(row).__name__}"
    for key in ("text", "caption"):
        if isinstance(row.get(key), str):
            return f"{key} {_preview(row[key])!r}"
    turns = row.get("messages") or row.get("conversations") or []
    for turn in turns if isinstance(turns, list) else []:
        content = turn.get("content", turn.get("value")) if isinstance(turn, dict) else None
        if isinstance(content, list):
            content = " ".join(block.get("text") or "" for block in content if isinstance(block, dict))
        if content:
            return f"first turn {_preview(content)!r}"
    return f"keys {sorted(row)}"


def _is_url(image: Any) -> bool:
    return isinstance(image, str) and image.startswith(("http://", "https://"))


def image_urls(row: dict) -> list[str]:
    """The images a row names by URL (in `images` / `image` or as image blocks' `url`, `path` or `image`), which
    loading would download."""
    urls = [image for image in _row_images(row) if _is_url(image)]
    messages = row.get("messages")
    for turn in messages if isinstance(messages, list) else []:
        content = turn.get("content") if isinstance(turn, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "image":
                urls += [block[key] for key in IMAGE_PAYLOAD_KEYS if _is_url(block.get(key))]
    return urls


def _preview(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _row_images(row: dict) -> list:
    """The row's images as a list, from `images` or `image` (one image or a list); paths become `str`."""
    images = row.get("images", row.get("image"))
    if images is None:
        return []
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    return [str(image) if isinstance(image, Path) else image for image in images]


def split_image_markers(text: str, image_token: str = IMAGE_TOKEN) -> list[dict]:
    """Text with `<image>` markers as content blocks. Whitespace right after a marker is dropped: the chat template
    writes its own separator after each image (the LLaVA form's `"<image>\\n{question}"` stays one newline)."""
    blocks = []
    for index, piece in enumerate(text.split(image_token)):
        if index > 0:
            blocks.append({"type": "image"})
            piece = piece.lstrip()
        if piece:
            blocks.append({"type": "text", "text": piece})
    return blocks


IMAGE_PAYLOAD_KEYS = ("image", "path", "url", "base64")


def conversation_messages(row: dict, image_token: str = IMAGE_TOKEN) -> tuple[list[dict], list]:
    """The row's conversation in one normal form: messages `{"role", "content"}` with list content of text blocks
    and bare `{"type": "image"}` placeholders, and the images that fill the placeholders, in order.

    Accepts both conversation forms. An image block with a payload of its own (`image`, `path`, `url`, `base64`)
    contributes that payload; a bare one takes the next entry of the row's `images`. Raises `ValueError` on an empty
    conversation, unknown LLaVA roles, malformed turns, or when bare placeholders and row images differ in number.
    """
    if "messages" in row:
        turns = row["messages"]
        if not isinstance(turns, list):
            raise ValueError(f"'messages' is a list of turns, got a {type(turns).__name__}")
        messages = []
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
                raise ValueError(f"turn {index} must be a dict with 'role' and 'content', got {turn!r}")
            messages.append({"role": turn["role"], "content": _content_blocks(turn["content"], image_token, index)})
    else:
        turns = row["conversations"]
        if not isinstance(turns, list):
            raise ValueError(f"'conversations' is a list of turns, got a {type(turns).__name__}")
        messages = []
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict) or "from" not in turn or not isinstance(turn.get("value"), str):
                raise ValueError(f"LLaVA turn {index} must be a dict with 'from' and a string 'value', got {turn!r}")
            if turn["from"] not in LLAVA_ROLES:
                raise ValueError(f"LLaVA turn {index} is from {turn['from']!r}; expected one of {sorted(LLAVA_ROLES)}")
            messages.append(
                {"role": LLAVA_ROLES[turn["from"]], "content": split_image_markers(turn["value"], image_token)}
            )
    if not messages:
        raise ValueError("the conversation is empty")
    for index, message in enumerate(messages):
        if message["role"] == "assistant" and not message_text(message).strip():
            raise ValueError(f"turn {index} (assistant) has no answer text: there would be nothing to learn from it")

    given = _row_images(row)
    bare = sum(block == {"type": "image"} for message in messages for block in message["content"])
    if bare != len(given):
        raise ValueError(f"{len(given)} images but {bare} image blocks or {image_token} markers")
    remaining, images = iter(given), []
    for message in messages:
        for index, block in enumerate(message["content"]):
            if block["type"] == "image":
                payload = next((block[key] for key in IMAGE_PAYLOAD_KEYS if key in block), None)
                images.append(next(remaining) if payload is None else payload)
                message["content"][index] = {"type": "image"}
    return messages, images


def message_text(message: dict) -> str:
    """The text of a normal-form message (its text blocks, joined)."""
    return "".join(block["text"] for block in message["content"] if block["type"] == "text")


def _content_blocks(content: Any, image_token: str, turn: int) -> list[dict]:
    if isinstance(content, str):
        return split_image_markers(content, image_token)
    if not isinstance(content, list) or not all(isinstance(block, dict) and "type" in block for block in content):
        raise ValueError(f"turn {turn}: content is a string or a list of blocks with a 'type', got {content!r}")
    blocks = []
    for block in content:
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise ValueError(f"turn {turn}: a text block needs a string 'text', got {block!r}")
            blocks.extend(split_image_markers(block["text"], image_token))
        elif block["type"] == "image":
            payload = {key: block[key] for key in IMAGE_PAYLOAD_KEYS if block.get(key) is not None}
            blocks.append({"type": "image", **{key: _as_str(value) for key, value in payload.items()}})
        else:
            raise ValueError(f"turn {turn}: blocks are of type 'text' or 'image', got {block['type']!r}")
    return blocks


def _as_str(value):
    return str(value) if isinstance(value, Path) else value


def fill_image_blocks(messages: list[dict], images: list) -> list[dict]:
    """Copies of normal-form `messages` whose k-th image placeholder holds the k-th image as its `image` payload."""
    remaining = iter(images)
    return [
        {
            **message,
            "content": [
                {"type": "image", "image": next(remaining)} if block["type"] == "image" else block
                for block in message["content"]
            ],
        }
        for message in messages
    ]


def document_text(row: dict, image_token: str = IMAGE_TOKEN, end_of_chunk_token: str = END_OF_CHUNK_TOKEN):
    """(text, images) of a pretraining row; a caption pair becomes `<image>{caption}<|endofchunk|>`."""
    if "text" in row:
        if not isinstance(row["text"], str):
            raise ValueError(f"'text' is a string, got a {type(row['text']).__name__}")
        if not row["text"].strip():
            raise ValueError("the document text is empty")
        return row["text"], _row_images(row)
    if not isinstance(row["caption"], str) or not row["caption"].strip():
        raise ValueError(f"'caption' is a non-empty string, got {row['caption']!r}")
    images = _row_images(row)
    if len(images) != 1:
        raise ValueError(f"a caption pair has exactly one 'image', got {len(images)}")
    return f"{image_token}{row['caption']}{end_of_chunk_token}", images


def check_image_files(images: list) -> None:
    """Raises `FileNotFoundError` for a path with an image file extension that does not exist: `load_image` would
    otherwise try to read it as base64 and report a decoding error."""
    extensions = Image.registered_extensions()
    for image in images:
        is_local = isinstance(image, str) and not image.startswith(("http://", "https://", "data:"))
        if is_local and os.path.splitext(image)[1].lower() in extensions and not os.path.isfile(image):
            raise FileNotFoundError(f"image file not found: {image}")


def load_rows(*paths: str | os.PathLike) -> list[dict]:
    """Reads the rows of every file in order: a JSON file holds a list of rows, a JSONL file one row per line.

    Relative image paths (in `images`, `image`, and image blocks' `path`) are resolved against the file's folder,
    so a dataset folder can be moved as a whole.
    """
    return [row for path in paths for row in _load_rows_file(Path(path))]


def read_json_records(path: str | os.PathLike, name: str = "dataset"):
    """What a JSON file holds, or the records of a JSONL file (one per line, blank lines skipped), for every reader of
    data files (training rows, VLFeedback, VLGuard). Errors name the file, and the line of a JSONL file; what the
    records must be is the caller's to check."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} file not found: {path}")
    if path.suffix != ".jsonl":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); JSONL files need the .jsonl extension") from None
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    records = []
    for _, record in json_lines(path):
        if isinstance(record, JSONLineError):
            raise record
        records.append(record)
    return records


class JSONLineError(ValueError):
    """A line of a JSONL file that is not a JSON value (or not UTF-8 text); the message names the file and line,
    `problem` says what is wrong with the line."""

    def __init__(self, path, number: int, problem: str):
        super().__init__(f"{path}, line {number}: {problem}")
        self.problem = problem


def json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, record) of every non-blank line of a JSONL file, read line by line; a line that is not JSON
    gives a `JSONLineError` in place of its record, so that a reader can stop there (`read_json_records`) or drop the
    line and go on (a stream)."""
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield number, json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                yield number, JSONLineError(path, number, f"not valid JSON ({error})")


def _load_rows_file(path: Path) -> list[dict]:
    rows = read_json_records(path)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: a JSON dataset is a list of rows, got a {type(rows).__name__}")
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {number} is a {type(row).__name__}, expected an object")
    return [resolve_image_paths(row, path.parent) for row in rows]


def resolve_image_paths(row: dict, folder: Path) -> dict:
    """The row with its relative image paths (in `images`, `image`, and image blocks' `path`) resolved against
    `folder`, the folder of the file it was read from."""

    def resolve(image):
        if isinstance(image, str) and not image.startswith(("http://", "https://", "data:")):
            candidate = folder / image
            # Base64 strings are not paths; only strings that look like relative file names are resolved.
            if not os.path.isabs(image) and os.path.splitext(image)[1]:
                return str(candidate)
        return image

    row = dict(row)
    for key in ("images", "image"):
        if isinstance(row.get(key), list):
            row[key] = [resolve(image) for image in row[key]]
        elif key in row:
            row[key] = resolve(row[key])
    if isinstance(row.get("messages"), list):
        row["messages"] = [
            {
                **turn,
                "content": [
                    {**block, "path": resolve(block["path"])} if isinstance(block, dict) and "path" in block else block
                    for block in turn["content"]
                ],
            }
            if isinstance(turn, dict) and isinstance(turn.get("content"), list)
            else turn
            for turn in row["messages"]
        ]
    return row


def _holds_image(messages: list[dict], image_token: str) -> bool:
    """Whether any message has an image block or an image marker in its text."""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            if isinstance(block, dict) and (block.get("type") == "image" or image_token in (block.get("text") or "")):
                return True
    return False


def normalize_preference_row(
    row: dict, image_token: str = IMAGE_TOKEN, require_images: bool = True, position: int | None = None
) -> dict:
    """A preference row in the one form the collator and `datasets` features hold: `prompt`, `chosen` and
    `rejected` as messages with list content (text blocks and bare `{"type": "image"}` placeholders) and `images`
    filling the prompt's placeholders in order (`image` is accepted for one image; string content may hold `<image>`
    markers; image blocks may carry their own payload). Keeps `id` when there is one.

    Raises `ValueError` naming the row when keys are missing, images and placeholders differ in number, a completion
    holds an image, is empty or is not an assistant turn, chosen and rejected are the same answer, the prompt does not
    end with a user turn, or (with `require_images`) the row has no image; `position` (in a batch) names rows without
    `id`.
    """
    name = describe_preference_row(row, position)
    missing = [key for key in ("prompt", "chosen", "rejected") if key not in row]
    if missing:
        raise ValueError(
            f"preference row {name}: missing {missing}; a row has 'images', 'prompt', 'chosen' and 'rejected'"
        )
    images = row.get("images", row.get("image"))
    images = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
    if require_images and not images:
        raise ValueError(
            f"preference row {name} has no images, but this run expects an image in every row "
            "(pass require_images=False for text-only rows)"
        )
    try:
        completions = {}
        for key in ("chosen", "rejected"):
            messages = _as_messages(row[key], "assistant")
            if _holds_image(messages, image_token):
                raise ValueError(f"the {key} completion holds an image; images belong in the prompt")
            completions[key], _ = conversation_messages({"messages": messages, "images": []})
            roles = [message["role"] for message in completions[key]]
            if roles != ["assistant"] * len(roles):
                raise ValueError(f"the {key} completion has {roles} turns; a completion is the assistant's answer")
        prompt, images = conversation_messages({"messages": _as_messages(row["prompt"], "user"), "images": images})
        if prompt[-1]["role"] != "user":
            raise ValueError(
                f"the prompt ends with a {prompt[-1]['role']} turn; it must end with the user turn that the "
                "completions answer"
            )
        answers = [" ".join(" ".join(map(message_text, turns)).split()) for turns in completions.values()]
        if answers[0] == answers[1]:
            raise ValueError("chosen and rejected are the same answer: the row expresses no preference")
    except ValueError as error:
        raise ValueError(f"preference row {name}: {error}") from None
    normalized = {"images": images, "prompt": prompt, **completions}
    if row.get("id") is not None:
        normalized["id"] = str(row["id"])
    return normalized


def _as_messages(value: Any, role: str) -> list[dict]:
    """TRL's standard (string) form as one message of `role`; conversational values as they are."""
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def describe_preference_row(row: Any, position: int | None = None) -> str:
    """A short name for a row in messages: its `id`, else its position (in a batch or the row list), else its keys."""
    if isinstance(row, dict) and row.get("id") is not None:
        return f"id {row['id']!r}"
    return f"at position {position}" if position is not None else describe_row(row)
