# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Time to first token of a conversation's second turn, with and without turn 1's cache.

    python -m benchmarks.multi_turn [--preset small] [--threads 1] [--repeats 3]

Turn 1: one 5-view image and a question, `--first-tokens` generated tokens. Turn 2: a new question (and, in the second
row, a new 5-view image), after turn 1's whole conversation. Without the cache, `generate` encodes every image and
prefills the whole conversation; with it (`generate(..., cache=turn_1_cache)`, every image passed as
`apply_chat_template` returns them), it encodes only the new images and prefills only the new tokens. Each number is
the best of `--repeats` after a warm-up; the greedy ids of both are checked equal.
"""

import argparse
import copy

import torch

from modeling_xgenmm.checkpoint.contents import build_processor
from modeling_xgenmm.compat_xgenmm import CACHE_ARG, get_cache
from xgenmm_processing import XGenMMTokenizer

from .generation_speed import mode_settings, square_image, timed_generate
from .presets import PRESETS, TOKENIZER_FOLDER, preset_config
from .run import build_model, markdown_table


def turn_inputs(model, processor, first_tokens: int, new_image: bool) -> tuple[dict, dict, object]:
    """Turn 2's inputs without the cache (every image) and with it (the cache of turn 1)."""
    side = 2 * processor.image_processor.size["height"]
    first = processor(text=["<|user|>\n<image>\nWhat is in the picture?<|end|>\n<|assistant|>\n"],
                      images=[[square_image(side)]], return_tensors="pt")  # fmt: skip
    config = copy.deepcopy(model.generation_config)
    config.update(do_sample=False, max_new_tokens=first_tokens, eos_token_id=None, return_dict_in_generate=True)
    output = model.generate(**first, generation_config=config)
    text = "<|end|>\n<|user|>\n" + ("<image>\n" if new_image else "") + "And the colours?<|end|>\n<|assistant|>\n"
    second = processor(text=[text], images=[[square_image(side).rotate(90)]] if new_image else None,
                       return_tensors="pt")  # fmt: skip
    inputs = {
        "input_ids": torch.cat([output.sequences, second["input_ids"]], 1),
        "attention_mask": torch.ones(1, output.sequences.shape[1] + second["input_ids"].shape[1], dtype=torch.long),
    }
    if new_image:
        inputs["pixel_values"] = torch.cat([first["pixel_values"], second["pixel_values"]])
        inputs["image_sizes"] = torch.cat([first["image_sizes"], second["image_sizes"]])
    else:
        inputs |= {"pixel_values": first["pixel_values"], "image_sizes": first["image_sizes"]}
    return inputs, get_cache(output)


def ttft(model, inputs: dict, cache, repeats: int) -> tuple[float, torch.Tensor]:
    settings = mode_settings("sdpa", "inductor")[1]
    times = []
    for _ in range(1 + repeats):
        given = {**inputs, CACHE_ARG: copy.deepcopy(cache)} if cache is not None else inputs
        times.append(timed_generate(model, given, settings, new_tokens=2)[0])
    config = copy.deepcopy(model.generation_config)
    config.update(do_sample=False, max_new_tokens=4, eos_token_id=None)
    given = {**inputs, CACHE_ARG: copy.deepcopy(cache)} if cache is not None else inputs
    return min(times[1:]), model.generate(**given, generation_config=config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "small"], default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-tokens", type=int, default=64)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    preset = PRESETS[arguments.preset]
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(preset, tokenizer)
    processor = build_processor(config, tokenizer)
    model = build_model(config, preset.dtype, torch.device("cpu"))
    model.config._attn_implementation = "sdpa"
    rows = []
    for new_image in (False, True):
        inputs, cache = turn_inputs(model, processor, arguments.first_tokens, new_image)
        fresh, fresh_ids = ttft(model, inputs, None, arguments.repeats)
        cached, cached_ids = ttft(model, inputs, cache, arguments.repeats)
        if not torch.equal(fresh_ids, cached_ids):
            raise AssertionError("turn 2 from the cache gave other greedy ids than the fresh call")
        rows.append(["text" if not new_image else "text and a new image", str(inputs["input_ids"].shape[1]),
                     fresh * 1000, cached * 1000, f"{fresh / cached:.2f}x"])  # fmt: skip
    print(
        f"preset {arguments.preset}, {arguments.threads} thread(s), turn 1: one 5-view image, "
        f"{arguments.first_tokens} generated tokens; best of {arguments.repeats}; greedy ids equal\n"
    )
    header = ["turn 2 adds", "conversation tokens", "TTFT without cache ms", "TTFT with turn 1's cache ms", "speed-up"]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
