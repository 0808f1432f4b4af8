# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Tokenizer for xGen-MM (BLIP-3): the Phi-3 tokenizer plus the three tokens the released models added.

This file is copied verbatim into every Hub folder, so it imports only `transformers`.
"""

from transformers import LlamaTokenizer


class XGenMMTokenizer(LlamaTokenizer):
    r"""
    The Phi-3 tokenizer (Llama-style sentencepiece BPE with byte fallback, backed by `tokenizers`) with the tokens
    xGen-MM adds after the Phi-3 vocabulary: `<image>`, `<image placeholder>` and `<|endofchunk|>`. For the released
    models the Phi-3 vocabulary has 32012 tokens (`<pad>` = 32011 is its last), so they get ids 32012, 32013 and 32014.

    Loading a folder in the original Phi-3 format (`"tokenizer_class": "LlamaTokenizer"`, no image tokens) appends the
    three tokens in that order at ids `len(vocabulary)`, `+1`, `+2`, exactly as the original code did at run time.

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

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        # The `tokenizers` backend keeps the truncation and padding of the last call (every call sets them again).
        # Saved into tokenizer.json they would make the reloaded tokenizer truncate and pad every input.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)


__all__ = ["XGenMMTokenizer"]
