# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""One measurement of `compare.py`, in a fresh process, against whichever checkout's `modeling_xgenmm` and
`xgenmm_processing` come first on `sys.path` (the harness runs it from a folder that links them).

    python -m benchmarks.compare_worker GROUP --preset small --weights W.safetensors --out OUT.pt [--threads 1]

Groups: `weights` (builds the preset's model from a seed and saves its weights, which every other run loads, so both
checkouts run the same numbers), `generation` (TTFT and decode at batch 1 and 8 in fp32, batch 1 in bf16; the
prefill's FLOPs by part and the matmul rate they are judged against), `decode` (batch-1 decoding of the variants of
`decode_variants.py`: bf16, int8 and int4 weights, compiled, float32 stored transposed; those a checkout cannot build
are left out), `training` (forward + backward with labels, the SFT recipe's trainable weights), `images` (both image
backends).
Only the package's public classes are used, so older checkouts run the same code. Timings go to stdout as JSON;
the outputs to compare (greedy ids, logits, loss, gradients, pixels) to `--out`.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import modeling_xgenmm
from modeling_xgenmm import XGenMMForConditionalGeneration
from xgenmm_processing import XGenMMImageProcessor, XGenMMImageProcessorPil, XGenMMProcessor, XGenMMTokenizer

from .decode_variants import measure_variants
from .generation_speed import FirstTokenClock, square_image
from .gpu_ceilings import decode_weight_bytes, matmul_flops, prefill_flops_by_part
from .image_processing import mixed_images
from .presets import PRESETS, TOKENIZER_FOLDER, preset_config


PROMPT = "<|user|>\n<image>\nDescribe the image in detail.<|end|>\n<|assistant|>\n"
ANSWER = "A red square on a blue field, next to a small green circle and a yellow triangle.<|end|>\n"
GENERATION_BATCHES = (1, 8)
TRAINING_ROWS = 4
MATMUL_SIZE = 2048  # the square float32 product whose rate the prefill is judged against (0.2 s at 1 thread here)


def build(preset_name: str, weights: str | None):
    tokenizer = XGenMMTokenizer.from_pretrained(TOKENIZER_FOLDER)
    config = preset_config(PRESETS[preset_name], tokenizer)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = XGenMMForConditionalGeneration._from_config(config, dtype=torch.float32)
    if weights is not None:
        model.load_state_dict(load_file(weights), strict=True)
    side = config.image_size
    image_processor = XGenMMImageProcessorPil(
        size={"height": side, "width": side}, image_grid_pinpoints=config.image_grid_pinpoints, anyres=config.anyres
    )
    processor = XGenMMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=config.perceiver_config.num_latents,
    )
    return model.eval(), processor


def model_inputs(processor, text: str, batch: int) -> dict:
    """The processor's inputs for `batch` copies of `text` with one image of two views' side (5 views). Tokens before
    `<|user|>` are dropped: tokenizers of older checkouts differ there (a leading prefix space), and both sides must
    run the same ids."""
    image = square_image(2 * processor.image_processor.size["height"])
    inputs = processor(text=[text] * batch, images=[[image]] * batch, return_tensors="pt")
    start = int((inputs["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids("<|user|>")).nonzero()[0])
    inputs["input_ids"] = inputs["input_ids"][:, start:]
    inputs["attention_mask"] = inputs["attention_mask"][:, start:]
    return inputs


def best(function, repeats: int):
    """The fastest of `repeats` timed calls after a warm-up call, and the warm-up's result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times), result


def read_bandwidth(repeats: int) -> float:
    """Bytes/s of reading 1 GiB of float32 (`sum`), every page written first (untouched pages read as one shared zero
    page, far faster than memory), at the process's thread count."""
    data = torch.ones(2**28)
    seconds, _ = best(data.sum, repeats)
    return data.numel() * data.element_size() / seconds


def generation(model, processor, repeats: int, new_tokens: int) -> tuple[dict, dict]:
    """TTFT and decode tokens/s, greedy, `new_tokens` per row: no end-of-sequence id, so that every run decodes them
    all without a `min_new_tokens` processor (which scans the vocabulary every step) weighing on the decode."""
    model.generation_config.eos_token_id = None  # as generation_speed.timed_generate
    timings, outputs = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        for batch in GENERATION_BATCHES if dtype == torch.float32 else (1,):
            inputs = model_inputs(processor, PROMPT, batch)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            runs = []
            for _ in range(1 + repeats):
                clock = FirstTokenClock(torch.device("cpu"))
                start = time.perf_counter()
                generated = model.generate(
                    **inputs,
                    do_sample=False,
                    max_new_tokens=new_tokens,
                    logits_processor=[clock],
                    output_scores=True,
                    return_dict_in_generate=True,
                )
                runs.append((clock.time - start, time.perf_counter() - clock.time))
            name = f"{str(dtype).removeprefix('torch.')}_b{batch}"
            timings[f"ttft_{name}"] = min(first for first, _ in runs[1:])
            timings[f"decode_tokens_per_s_{name}"] = batch * (new_tokens - 1) / min(rest for _, rest in runs[1:])
            timings[f"decode_weight_bytes_{name}"] = decode_weight_bytes(model)
            outputs[f"ids_{name}"] = generated.sequences
            outputs[f"scores_{name}"] = torch.stack(generated.scores, 1).float()
            outputs[f"input_ids_{name}"] = inputs["input_ids"]
    model.to(torch.float32)
    for batch in GENERATION_BATCHES:
        flops = prefill_flops_by_part(model, model_inputs(processor, PROMPT, batch))
        timings |= {f"prefill_flops_{part}_b{batch}": count for part, count in flops.items()}
    timings["read_bandwidth_bytes_per_s"] = read_bandwidth(repeats)
    timings["matmul_flops_per_s_float32"] = matmul_flops(torch.device("cpu"), torch.float32, MATMUL_SIZE, repeats)
    return timings, outputs


def decode(model, processor, repeats: int, new_tokens: int) -> tuple[dict, dict]:
    """Batch-1 decoding of every variant this checkout can build (`decode_variants.py`), on the same weights."""
    inputs = model_inputs(processor, PROMPT, 1)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        measured = measure_variants(folder, inputs, new_tokens, repeats, "inductor", torch.device("cpu"))
    timings, outputs = {}, {}
    for name, result in measured.items():
        if "skipped" in result:
            continue
        kept = ("ttft_s", "decode_s", "decode_tokens_per_s", "language_model_bytes", "agreement", "agreement_holds")
        timings |= {f"{name}/{key}": result[key] for key in kept}
        if "compile_s" in result:
            timings[f"{name}/compile_s"] = result["compile_s"]
        outputs[f"ids_variant_{name}"] = torch.tensor(result["ids"])
    return timings, outputs


def training(model, processor, repeats: int) -> tuple[dict, dict]:
    """One forward + backward with labels on the answer tokens only (the prompt and image tokens -100), the vision
    tower frozen as in the SFT recipe."""
    inputs = model_inputs(processor, PROMPT + ANSWER, TRAINING_ROWS)
    answer_length = len(processor.tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    labels = inputs["input_ids"].clone()
    labels[:, : labels.shape[1] - answer_length] = -100
    for parameter in model.model.vision_tower.parameters():
        parameter.requires_grad_(False)
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        return loss.detach()

    seconds, loss = best(step, repeats)
    gradients = {
        f"grad_{name}": parameter.grad
        for name, parameter in model.named_parameters()
        if parameter.grad is not None and name.endswith(("lm_head.weight", "layers.0.self_attn.qkv_proj.weight"))
    }
    return {"train_step_s": seconds, "labelled_tokens": int((labels[:, 1:] != -100).sum())}, {
        "loss": loss,
        **gradients,
    }


def real_views(pixel_values: torch.Tensor, image_processor, images) -> torch.Tensor:
    """`(views, 3, H, W)` of the real views, from either layout (one row per image, or every view flattened)."""
    if pixel_values.dim() == 4:
        return pixel_values
    counts = [image_processor.get_num_image_views((image.height, image.width)) for image in images]
    return torch.cat([row[:count] for row, count in zip(pixel_values, counts)])


def images(repeats: int) -> tuple[dict, dict]:
    pictures = mixed_images()
    timings, outputs = {}, {}
    for name, image_processor in (("pil", XGenMMImageProcessorPil()), ("torchvision", XGenMMImageProcessor())):
        seconds, result = best(lambda processor=image_processor: processor(pictures, return_tensors="pt"), repeats)
        timings[f"images_per_s_{name}"] = len(pictures) / seconds
        outputs[f"pixels_{name}"] = real_views(result["pixel_values"], image_processor, pictures)
    return timings, outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", choices=("weights", "generation", "decode", "training", "images"))
    parser.add_argument("--preset", default="small", choices=("tiny", "small"))
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new_tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    package = str(Path(modeling_xgenmm.__file__).resolve().parent)
    if args.group == "weights":
        model, _ = build(args.preset, None)
        save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, args.weights)
        timings, outputs = {}, {}
    elif args.group == "images":
        timings, outputs = images(args.repeats)
    else:
        model, processor = build(args.preset, args.weights)
        if args.group == "generation":
            timings, outputs = generation(model, processor, args.repeats, args.new_tokens)
        elif args.group == "decode":
            timings, outputs = decode(model, processor, args.repeats, args.new_tokens)
        else:
            timings, outputs = training(model, processor, args.repeats)
    if args.out:
        torch.save(outputs, args.out)
    print(json.dumps({"package": package, **timings}))


if __name__ == "__main__":
    main()
