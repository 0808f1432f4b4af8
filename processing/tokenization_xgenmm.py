# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Tokenizer for xGen-MM (BLIP-3): the Phi-3 tokenizer plus the three tokens the released models added, giving the ids
the released models were trained on.

This file is copied verbatim into every Hub folder, so it imports only numpy and `transformers`.
"""

import os
import re

import numpy as np
from transformers import LlamaTokenizer


SPIECE_UNDERLINE = "\u2581"
# Whitespace for Python's `str.isspace` (which the original tokenizer's `rstrip`/`lstrip` of added tokens used) but
# not for Rust's `char::is_whitespace` (the backend's): every other character is whitespace for both or for neither.
PYTHON_ONLY_WHITESPACE = "\x1c\x1d\x1e\x1f"


class XGenMMTokenizer(LlamaTokenizer):
    r"""
    The Phi-3 tokenizer (Llama-style sentencepiece BPE with byte fallback, backed by `tokenizers`) with the tokens
    xGen-MM adds after the Phi-3 vocabulary: `<image>`, `<image placeholder>` and `<|endofchunk|>`. For the released
    models the Phi-3 vocabulary has 32012 tokens (`<pad>` = 32011 is its last), so they get ids 32012, 32013 and 32014.

    Text -> ids is exactly what the released models were trained with: the slow sentencepiece tokenizer of
    transformers 4.x with `legacy=False`, as the model cards and the training code loaded it. That tokenizer reads
    a text as `"▁" + text` (with `▁` in the text read as a space) and keeps that leading `▁` as a token of its own
    before an added token that is not one of `all_special_tokens` (so every instruct prompt starts with `▁`,
    `<|system|>`, ...) and before a leading space. The `tokenizers` backend does the rest of the work; the rules it
    cannot express are applied to the text in `_encode_plus`, and the offsets of the result are given back in the
    caller's text.

    Loading a folder in the original Phi-3 format (`"tokenizer_class": "LlamaTokenizer"`, no image tokens) appends the
    three tokens in that order at ids `len(vocabulary)`, `+1`, `+2`, exactly as the original code did at run time.
    A folder needs `tokenizer.json`, or `tokenizer.model` with the `sentencepiece` and `protobuf` packages installed.

    The three tokens are named special tokens: `tokenizer.image_token` / `tokenizer.image_token_id`,
    `tokenizer.image_placeholder_token`, `tokenizer.end_of_chunk_token` (and their `_id`s). Like the released models,
    no BOS or EOS is added, padding is on the left (generation; pass `padding_side="right"` for training) and
    `model_max_length` is 4096.

    Args:
        bos_token (`str`, defaults to `"<s>"`), eos_token (`str`, defaults to `"<|endoftext|>"`),
        unk_token (`str`, defaults to `"<unk>"`), pad_token (`str`, defaults to `"<pad>"`):
            Phi-3's special tokens (ids 1, 32000, 0 and 32011 in the released vocabulary).
        image_token (`str`, defaults to `"<image>"`):
            Marks where an image goes; the processor expands each one to the image's feature count.
        image_placeholder_token (`str`, defaults to `"<image placeholder>"`):
            Filler the original base-model prompts put after `<image>`; the processor folds such runs into one marker.
        end_of_chunk_token (`str`, defaults to `"<|endofchunk|>"`):
            Ends each in-context example of a base-model few-shot prompt.
        add_bos_token (`bool`, defaults to `False`), add_eos_token (`bool`, defaults to `False`),
        padding_side (`str`, defaults to `"left"`), model_max_length (`int`, defaults to 4096):
            The released tokenizer settings.
        **kwargs: see [`LlamaTokenizer`].
    """

    def __init__(
        self,
        vocab: str | dict | list | None = None,
        merges: str | list | None = None,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<pad>",
        image_token="<image>",
        image_placeholder_token="<image placeholder>",
        end_of_chunk_token="<|endofchunk|>",
        add_bos_token=False,
        add_eos_token=False,
        padding_side="left",
        model_max_length=4096,
        **kwargs,
    ):
        super().__init__(
            vocab=vocab,
            merges=merges,
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            pad_token=pad_token,
            image_token=image_token,
            image_placeholder_token=image_placeholder_token,
            end_of_chunk_token=end_of_chunk_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            padding_side=padding_side,
            model_max_length=model_max_length,
            **kwargs,
        )

    @classmethod
    def convert_to_native_format(cls, trust_remote_code=False, **kwargs):
        """Refuses, naming the file and the fix, the folders transformers would otherwise read wrongly: none of the
        tokenizer files (a vocabulary of only the special tokens), or only `tokenizer.model` without the packages
        that read it (a misleading `tiktoken` error)."""
        tokenizer_file, vocab_file = kwargs.get("tokenizer_file"), kwargs.get("vocab_file")
        if not (tokenizer_file and os.path.isfile(tokenizer_file)) and kwargs.get("vocab") is None:
            if not (vocab_file and os.path.isfile(vocab_file)):
                raise OSError(
                    f"{cls.__name__} needs tokenizer.json (or the sentencepiece tokenizer.model) next to "
                    "tokenizer_config.json, and the folder has neither; copy them from the model's repository"
                )
            missing = [name for name in ("sentencepiece", "google.protobuf") if not _importable(name)]
            if missing:
                raise OSError(
                    f"the folder has {os.path.basename(vocab_file)} but no tokenizer.json; reading a sentencepiece "
                    f"model needs the packages {' and '.join(name.split('.')[-1] for name in missing)} "
                    "(`pip install sentencepiece protobuf`), or copy tokenizer.json from the model's repository"
                )
        return super().convert_to_native_format(trust_remote_code=trust_remote_code, **kwargs)

    @classmethod
    def convert_from_spm_model(cls, vocab, **kwargs):
        # Sentencepiece BPE merges the pair whose piece scores highest; transformers orders the merges by piece id,
        # which would put "▁ ▁" (piece 259) first, where the released tokenizer.json (by score) has it 61129th of
        # 61249: runs of spaces would be cut differently.
        from transformers.convert_slow_tokenizer import import_protobuf
        from transformers.tokenization_utils_base import generate_merges

        with open(kwargs["vocab_file"], "rb") as file:
            model = import_protobuf().ModelProto.FromString(file.read())
        kwargs["merges"] = generate_merges(vocab, {piece.piece: piece.score for piece in model.pieces})
        return {"vocab": vocab, **kwargs}

    def _encode_plus(self, text, text_pair=None, *args, is_split_into_words=False, **kwargs):
        if is_split_into_words or kwargs.get("sanitize_control_tokens"):
            return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        pairs = None if text_pair is None else list(text_pair) if batched else [text_pair]
        firsts = [self._as_original_reads(sample) for sample in texts]
        seconds = None if pairs is None else [self._as_original_reads(sample) for sample in pairs]
        backend_texts = [sample for sample, _ in firsts]
        backend_pairs = None if seconds is None else [sample for sample, _ in seconds]
        out = super()._encode_plus(
            backend_texts if batched else backend_texts[0],
            None if backend_pairs is None else backend_pairs if batched else backend_pairs[0],
            *args,
            **kwargs,
        )
        positions = [
            (first, None if seconds is None else seconds[index][1]) for index, (_, first) in enumerate(firsts)
        ]
        if out.encodings and any(mapped is not None for pair in positions for mapped in pair):
            self._give_offsets_in_caller_text(out, positions)
        return out

    def tokenize(self, text, pair=None, add_special_tokens=False, **kwargs) -> list[str]:
        # Vocabulary names: the backend names an `rstrip` token with the whitespace it took ("<|end|>\n").
        ids = self._encode_plus(text=text, text_pair=pair, add_special_tokens=add_special_tokens, **kwargs)[
            "input_ids"
        ]
        return self.convert_ids_to_tokens(ids)

    def _as_original_reads(self, text: str) -> tuple[str, list | None]:
        """The text to give the backend so that it yields the original tokenizer's ids, and for each of its
        characters the position in `text` it comes from (`None` for an added one), or `None` when they are the same
        positions."""
        text = text.replace(SPIECE_UNDERLINE, " ")  # the same length: positions stay
        positions = None
        if any(character in text for character in PYTHON_ONLY_WHITESPACE):
            text, positions = self._strip_around_added_tokens(text)
        if text and (text[0] == " " or self._starts_with_added_non_special_token(text)):
            text = SPIECE_UNDERLINE + text
            positions = [None, *(range(len(text) - 1) if positions is None else positions)]
        return text, positions

    def _added_tokens_pattern(self) -> re.Pattern:
        tokens = tuple(self.added_tokens_encoder)
        cached = getattr(self, "_added_tokens_pattern_cache", None)
        if cached is None or cached[0] != tokens:
            # Longest first: the backend matches the longest added token at a position.
            alternatives = "|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True))
            cached = self._added_tokens_pattern_cache = (tokens, re.compile(f"({alternatives})"))
        return cached[1]

    def _starts_with_added_non_special_token(self, text: str) -> bool:
        match = self._added_tokens_pattern().match(text)
        return match is not None and match.group(0) not in self.all_special_tokens

    def _strip_around_added_tokens(self, text: str) -> tuple[str, list[int]]:
        """`text` with the whitespace (Python's) that `rstrip`/`lstrip` added tokens take beside them removed, and the
        position in `text` of each remaining character."""
        pieces = self._added_tokens_pattern().split(text)  # text, token, text, token, ..., text
        spans, start = [], 0
        for piece in pieces:
            spans.append([start, start + len(piece)])
            start += len(piece)
        for index in range(1, len(pieces), 2):
            token = self.added_tokens_decoder[self.added_tokens_encoder[pieces[index]]]
            after, before = spans[index + 1], spans[index - 1]
            if token.rstrip:
                after[0] = after[1] - len(text[after[0] : after[1]].lstrip())
            if token.lstrip:
                before[1] = before[0] + len(text[before[0] : before[1]].rstrip())
        positions = [position for start, end in spans for position in range(start, max(start, end))]
        return "".join(text[position] for position in positions), positions

    @staticmethod
    def _give_offsets_in_caller_text(out, positions: list[tuple[list | None, list | None]]) -> None:
        """Replaces the encodings (and `offset_mapping`) of `out` by ones whose character offsets are in the caller's
        texts, so that `char_to_token` (assistant masks of chat templates) and offsets stay right."""
        mapping = out.get("overflow_to_sample_mapping")
        samples = range(len(out.encodings)) if mapping is None else [int(sample) for sample in mapping]
        out._encodings = [
            CallerTextEncoding(encoding, positions[sample]) for encoding, sample in zip(out.encodings, samples)
        ]
        if "offset_mapping" in out:
            rows = [encoding.offsets for encoding in out.encodings]
            old = out["offset_mapping"]
            if hasattr(old, "new_tensor"):
                out["offset_mapping"] = old.new_tensor(rows)
            elif isinstance(old, np.ndarray):
                out["offset_mapping"] = np.asarray(rows, dtype=old.dtype)
            else:
                out["offset_mapping"] = rows if old and isinstance(old[0], list) else rows[0]

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        # The `tokenizers` backend keeps the truncation and padding of the last call (every call sets them again).
        # Saved into tokenizer.json they would make the reloaded tokenizer truncate and pad every input.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)


class CallerTextEncoding:
    """A `tokenizers.Encoding` whose character offsets are in the caller's text rather than in the text the backend
    was given. `positions` holds, per sequence (text, pair), the caller position of each backend character (`None`
    for an added one), or `None` where the two texts are the same."""

    def __init__(self, encoding, positions: tuple[list | None, list | None]):
        self._encoding = encoding
        self._positions = positions
        self._offsets = None

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_encoding", "_positions", "_offsets"):
            raise AttributeError(name)
        return getattr(self._encoding, name)

    def _span(self, start: int, end: int, sequence: int | None) -> tuple[int, int]:
        positions = None if sequence is None else self._positions[sequence]
        if positions is None:
            return start, end
        kept = [position for position in positions[start:end] if position is not None]
        return (kept[0], kept[-1] + 1) if kept else (0, 0)  # an added character only: zero width at the start

    @property
    def offsets(self) -> list[tuple[int, int]]:
        if self._offsets is None:
            self._offsets = [
                self._span(start, end, sequence)
                for (start, end), sequence in zip(self._encoding.offsets, self._encoding.sequence_ids)
            ]
        return self._offsets

    def token_to_chars(self, token_index: int):
        sequence = self._encoding.token_to_sequence(token_index)
        return None if sequence is None else self.offsets[token_index]

    def char_to_token(self, char_pos: int, sequence_index: int = 0):
        for index, ((start, end), sequence) in enumerate(zip(self.offsets, self._encoding.sequence_ids)):
            if sequence == sequence_index and start <= char_pos < end:
                return index
        return None


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:
        return False


__all__ = ["XGenMMTokenizer"]
