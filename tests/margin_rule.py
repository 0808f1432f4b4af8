"""The margin rule (`benchmarks/agreement.py` states and implements it) as the tests use it: a variant of a model (bf16
weights, quantized weights, compiled decoding) gives the reference's greedy ids wherever the reference's choice is
clear of the variant's error; and the runs that give the ids and logits it judges."""

import torch

from benchmarks.agreement import margin_rule
from modeling_xgenmm.compat_xgenmm import CACHE_ARG, get_cache


def generation_kwargs(kwargs: dict) -> dict:
    """A recorded case's generation kwargs for a plain greedy run (no repetition penalty)."""
    return {key: value for key, value in kwargs.items() if key not in ("repetition_penalty", "do_sample")}


def in_model_dtype(model, images: dict) -> dict:
    return {key: value.to(model.dtype) if key == "pixel_values" else value for key, value in images.items()}


def greedy(model, inputs: dict, images: dict, kwargs: dict) -> torch.Tensor:
    """The new ids of a greedy `generate` on a recorded case's inputs."""
    output = model.generate(**inputs, **in_model_dtype(model, images), **generation_kwargs(kwargs), do_sample=False)
    return output[:, inputs["input_ids"].shape[1] :]


def greedy_with_logits(model, inputs: dict, images: dict, kwargs: dict, **generate_kwargs) -> tuple:
    """The new ids of a greedy `generate` and the logits `(batch, steps, vocab)` it chose them from (the decoding
    path `generate_kwargs` select: a static cache, compilation)."""
    output = model.generate(
        **inputs,
        **in_model_dtype(model, images),
        **{**generation_kwargs(kwargs), **generate_kwargs},
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return output.sequences[:, inputs["input_ids"].shape[1] :], torch.stack(output.logits, 1).float()


def step_logits(model, inputs: dict, images: dict, new_ids: torch.Tensor) -> torch.Tensor:
    """Logits `(batch, steps, vocab)` that choose each of `new_ids`, teacher-forced as `generate` runs: the prompt with
    its images, then `new_ids` read from the cache (a generated id is text, whatever its value), positions counted over
    the attention mask (left padding)."""
    images = in_model_dtype(model, images)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(new_ids)], 1)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    prompt = inputs["input_ids"].shape[1]
    with torch.no_grad():
        first = model(**inputs, **images, position_ids=positions[:, :prompt], use_cache=True)
        rest = model(
            input_ids=new_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, prompt:-1],
            **{CACHE_ARG: get_cache(first)},
        )  # fmt: skip
    return torch.cat([first.logits[:, -1:], rest.logits], 1).float()


def compared_steps(
    reference_ids: torch.Tensor,
    reference_logits: torch.Tensor,
    variant_ids: torch.Tensor,
    variant_logits: torch.Tensor,
    eos_token_id: int | list[int],
) -> list[int]:
    """Asserts the rule on every row; returns the number of steps compared in each (those before its first step whose
    margin is not clear of the variant's error). A row is judged up to its end-of-sequence id (padding after it)."""
    rows = margin_rule(reference_ids, reference_logits, variant_ids, variant_logits, eos_token_id)
    for row, agreement in enumerate(rows):
        # the reference's logits are those its ids were chosen from
        chosen = reference_logits[row, : agreement.steps].argmax(-1)
        assert chosen.tolist() == reference_ids[row, : agreement.steps].tolist(), row
        assert agreement.holds, (row, agreement, reference_ids[row], variant_ids[row])
    return [agreement.compared for agreement in rows]
