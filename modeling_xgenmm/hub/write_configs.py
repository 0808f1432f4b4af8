# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Writes every folder of `hub_configs/` from its `config.json`: the processing files (processor, chat template, and
for the small models the tiny tokenizer) and the model card.

    python -m modeling_xgenmm.hub.write_configs [hub_configs folder]

The Phi-3 vocabulary cannot be downloaded here, so `tiny-random` and `toy-world` get a tiny tokenizer with the same
layout scaled down (`shared/fixtures/official_tiny/token_map.json`): 995 ids, `<unk>` 0, `<s>` 1, `</s>` 2, the
byte-fallback tokens `<0x00>`..`<0xFF>` at 3..258, BPE pieces learned from a small English corpus up to 979, then
Phi-3's added tokens at 980..991 (`<|endoftext|>` ... `<|user|>`, `<pad>`) and xGen-MM's `<image>`,
`<image placeholder>`, `<|endofchunk|>` at 992..994. The released variants get `processor_config.json`,
`chat_template.jinja` and `README.md` only.

Like the `config.json` files there, the written files carry no `auto_map`: `save_pretrained` adds it, with the code,
when a folder is released, whatever the writing process imported before.
"""

import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

from xgenmm_processing import XGenMMTokenizer

from ..checkpoint.contents import END_OF_CHUNK_TOKEN, IMAGE_PLACEHOLDER_TOKEN, IMAGE_TOKEN, build_processor
from ..configuration_xgenmm import XGenMMConfig
from .model_card import hub_config_card


TINY_LEARNED_VOCAB_END = 980
# The small models of hub_configs/ that use the tiny tokenizer: tests (tiny-random) and the toy world recipe.
TINY_TOKENIZER_FOLDERS = ("tiny-random", "toy-world")
# Phi-3's added tokens after its 32000-piece sentencepiece vocabulary, in id order (ids 32000..32011 for real).
# All but `<|endoftext|>` and `<pad>` take the whitespace after them (`rstrip`), as in the released tokenizer: the
# newline after a role token is not a token of its own.
PHI3_TOKENS_WITHOUT_RSTRIP = ("<|endoftext|>", "<pad>")
PHI3_ADDED_TOKENS = [
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
    "<pad>",
]

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "gray"]
SHAPES = ["circle", "square", "triangle", "star", "cross", "heart", "diamond", "rectangle", "hexagon", "line", "dot"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
PLACES = ["left", "right", "top", "bottom", "center", "middle"]
RELATIONS = ["above", "below", "next to", "left of", "right of", "inside", "near"]
OBJECTS = ["ball", "box", "cup", "book", "chair", "table", "window", "door", "tree", "flower", "car", "house", "cat",
           "dog", "bird", "person", "road", "sky", "cloud", "grass", "water", "wall", "floor", "light"]  # fmt: skip
VERBS = ["see", "look", "find", "count", "draw", "move", "touch", "hold", "show", "point", "compare", "describe",
         "explain", "answer", "think", "know", "help", "tell", "read", "write"]  # fmt: skip
ADJECTIVES = ["bright", "dark", "round", "sharp", "empty", "full", "striped", "dotted", "solid", "shiny", "plain",
              "narrow", "wide", "tall", "short", "thin", "thick", "smooth", "rough", "small", "large"]  # fmt: skip
CHAT_PHRASES = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions.",
    "Describe the image in detail. Answer the question using a single word or phrase.",
    "A short description of this image in one sentence: A picture of shapes.",
    "What is shown in this image? Why? Which one? Who, when, how? Count the objects.",
    "Sure! Here is a description of the image. Thank you, that is correct. I do not know.",
    "Yes. No. Maybe. The answer is yes. The answer is no. Please compare the two images.",
    "0 1 2 3 4 5 6 7 8 9 10 12 25 100 3.5 1/2 - : ; , . ! ? ' \" ( ) [ ] + = % # @ & *",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
]


def toy_world_corpus() -> list[str]:
    """English sentences about a toy world of coloured shapes, plus generic chat phrases (deterministic)."""
    lines = list(CHAT_PHRASES)
    for color, shape in itertools.product(COLORS, SHAPES):
        lines.append(f"There is a {color} {shape} in the image.")
        lines.append(f"What color is the {shape}? The {shape} is {color}.")
        lines.append(f"Is the {shape} {color}? Yes, it is {color}.")
    for (digit, number), shape in itertools.product(enumerate(NUMBERS), SHAPES):
        lines.append(f"How many {shape}s are there? There are {number} {shape}s ({digit}).")
    for place, shape, color in itertools.product(PLACES, SHAPES, COLORS[:4]):
        lines.append(f"Where is the {color} {shape}? It is at the {place} of the picture.")
    for relation, (first, second) in itertools.product(RELATIONS, itertools.combinations(SHAPES[:6], 2)):
        lines.append(f"Is the {first} {relation} the {second}? No, the {second} is {relation} the {first}.")
    for obj, adjective, verb in zip(itertools.cycle(OBJECTS), ADJECTIVES * 4, itertools.cycle(VERBS)):
        lines.append(f"Can you {verb} the {adjective} {obj}? I can {verb} a {adjective} {obj} near the {obj}s.")
    for verb in VERBS:
        lines.append(f"Please {verb} what you {verb}. I would like to {verb} it, thanks for helping me.")
    return lines


def build_tiny_tokenizer(
    initial_tokenizer_len: int = TINY_LEARNED_VOCAB_END + len(PHI3_ADDED_TOKENS),
) -> XGenMMTokenizer:
    """A tiny tokenizer with the layout of the released Phi-3 + xGen-MM vocabulary scaled down: its vocabulary (the
    sentencepiece pieces, then Phi-3's added tokens) has `initial_tokenizer_len` ids, the three xGen-MM tokens follow.
    The default, 992, is the tokenizer of `tiny-random` (995 ids); pieces the corpus cannot fill are unused
    `<unusedN>` placeholders."""
    num_pieces = initial_tokenizer_len - len(PHI3_ADDED_TOKENS)
    byte_tokens = [f"<0x{byte:02X}>" for byte in range(256)]
    special = ["<unk>", "<s>", "</s>", *byte_tokens]
    if num_pieces < len(special):
        raise ValueError(f"initial_tokenizer_len={initial_tokenizer_len} leaves no room for the byte pieces")
    # Words are learned one by one (as sentencepiece does), so no piece spans a word boundary; characters outside
    # the corpus, "\n" included, fall back to bytes as in Phi-3.
    trainer_tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=num_pieces, special_tokens=special, min_frequency=1, show_progress=False)
    trainer_tokenizer.train_from_iterator(toy_world_corpus(), trainer)
    learned = json.loads(trainer_tokenizer.to_str())["model"]
    vocab = learned["vocab"]
    vocab.update({f"<unused{index}>": index for index in range(len(vocab), num_pieces)})
    added = PHI3_ADDED_TOKENS + [IMAGE_TOKEN, IMAGE_PLACEHOLDER_TOKEN, END_OF_CHUNK_TOKEN]
    return XGenMMTokenizer(
        vocab=vocab,
        merges=[tuple(merge) for merge in learned["merges"]],
        added_tokens_decoder={
            num_pieces + offset: AddedToken(
                token,
                special=True,
                normalized=False,
                rstrip=token in PHI3_ADDED_TOKENS and token not in PHI3_TOKENS_WITHOUT_RSTRIP,
            )
            for offset, token in enumerate(added)
        },
    )


def without_auto_map(value):
    """A JSON value with every `auto_map` entry removed, at any depth."""
    if isinstance(value, dict):
        return {key: without_auto_map(item) for key, item in value.items() if key != "auto_map"}
    if isinstance(value, list):
        return [without_auto_map(item) for item in value]
    return value


def write_hub_config_folder(folder: Path, tokenizer: XGenMMTokenizer) -> None:
    """Rewrites the processing files and the model card of one `hub_configs/` folder from its `config.json`."""
    config = XGenMMConfig.from_pretrained(folder)
    keep = ["processor_config.json", "chat_template.jinja"]
    if folder.name in TINY_TOKENIZER_FOLDERS:
        keep += ["tokenizer.json", "tokenizer_config.json"]
    with tempfile.TemporaryDirectory() as saved:
        build_processor(config, tokenizer).save_pretrained(saved)
        for name in keep:
            if name.endswith(".json") and name != "tokenizer.json":
                content = without_auto_map(json.loads((Path(saved) / name).read_text()))
                (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
            else:
                shutil.copyfile(Path(saved) / name, folder / name)
    hub_config_card(folder).save(folder / "README.md")


def write_hub_configs(hub_configs: Path) -> None:
    """Rewrites every folder of `hub_configs` that holds a `config.json`."""
    tokenizer = build_tiny_tokenizer()
    for folder in sorted(path for path in hub_configs.iterdir() if (path / "config.json").is_file()):
        write_hub_config_folder(folder, tokenizer)


__all__ = ["build_tiny_tokenizer", "write_hub_config_folder", "write_hub_configs"]


if __name__ == "__main__":
    write_hub_configs(Path(sys.argv[1] if len(sys.argv) > 1 else "hub_configs"))
