"""The reference cases recorded from the original Salesforce code (see the fixture folder's README.md), turned into
this package's model inputs, and the comparisons of our outputs with the recorded ones."""

import json
import lzma
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load, load_file
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from paths import original_fixtures_dir


LOGITS_ATOL = 1e-4


def initial_tokenizer_len(folder: Path) -> int:
    """The Phi-3 vocabulary size L of the set's checkpoints (the first added xGen-MM token is id L)."""
    config = json.loads((folder / "checkpoints" / "instruct" / "config.json").read_text())
    return config["text_config"]["initial_tokenizer_len"]


def fixture_tokenizer(folder: Path):
    """A tiny tokenizer with the set's id layout (`<image>` at L), for processing files next to its checkpoints."""
    from modeling_xgenmm.hub.write_configs import build_tiny_tokenizer

    return build_tiny_tokenizer(initial_tokenizer_len(folder))


def recorded_case_names(with_images: bool = False) -> list[str]:
    """Every case of cases/index.json (those with images only, with `with_images`), for parametrisation (a folder
    named by XGENMM_ORIGINAL_FIXTURES that does not hold the fixtures raises here, at collection)."""
    cases = json.loads((original_fixtures_dir() / "cases" / "index.json").read_text())["cases"]
    return [case["name"] for case in cases if not with_images or any(sample["images"] for sample in case["samples"])]


# The recorded greedy runs of a case: output ids -> the generation kwargs they were recorded with.
GREEDY_RUNS = {
    "gen_output_ids": "gen_kwargs",
    "gen2_output_ids": "gen2_kwargs",
    "gen_reppen_output_ids": "gen_reppen_kwargs",
}


@dataclass(frozen=True)
class RecordedCase:
    """One entry of cases/index.json with its tensors."""

    info: dict
    tensors: dict

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def variant(self) -> str:
        return self.info["variant"]

    @property
    def image_keys(self) -> list[str]:
        return [key for sample in self.info["samples"] for key in sample["images"]]

    def image_token_counts(self, row: int) -> list[int]:
        """Language-model positions taken by each image of sample `row`: views x latents per view."""
        sample = self.info["samples"][row]
        views = sample.get("num_patches_per_image", [1] * len(sample["images"]))
        return [count * self.info["num_tokens_per_vis"] for count in views]


@cache
def recorded_case(folder: Path, name: str) -> RecordedCase:
    index = json.loads((folder / "cases" / "index.json").read_text())
    info = next(case for case in index["cases"] if case["name"] == name)
    return RecordedCase(info=info, tensors=load_file(folder / info["file"]))


@cache
def _pixel_codes(folder: Path) -> dict[str, torch.Tensor]:
    return load(lzma.decompress((folder / "image_processing" / "pixel_values_u8.safetensors.xz").read_bytes()))


def case_images(folder: Path, case: RecordedCase) -> dict:
    """Our image inputs: every view of every image, sample-major, and each image's (height, width). The float
    tensors are the original processor's exactly (README section 4)."""
    if not case.image_keys:
        return {}
    codes = _pixel_codes(folder)
    kind = "anyres" if case.variant == "instruct" else "base"
    views = [codes[f"{kind}/{key}"].float() / 255 for key in case.image_keys]
    pixel_values = torch.cat([view.view(-1, 3, *view.shape[-2:]) for view in views])
    image_sizes = torch.stack([codes[f"size_wh/{key}"].flip(0) for key in case.image_keys])
    return {"pixel_values": (pixel_values - 0.5) / 0.5, "image_sizes": image_sizes}


def expand_image_tokens(
    ids: list[int], mask: list[int], token_counts: list[int], image_token_id: int, placeholder_id: int
) -> tuple[list[int], list[int]]:
    """Turns one original row into ours: each `<image>` (instruct) or `<image>` + its `<image placeholder>` run (base)
    becomes as many `<image>` tokens as the image has language-model positions."""
    out_ids, out_mask, images, position = [], [], iter(token_counts), 0
    while position < len(ids):
        if ids[position] != image_token_id:
            out_ids.append(ids[position])
            out_mask.append(mask[position])
            position += 1
            continue
        count, run = next(images), 1
        while position + run < len(ids) and ids[position + run] == placeholder_id:
            run += 1
        assert run in (1, count), f"<image> followed by {run - 1} placeholders for an image of {count} positions"
        out_ids += [image_token_id] * count
        out_mask += [1] * count
        position += run
    assert next(images, None) is None, "fewer <image> tokens than images"
    return out_ids, out_mask


def build_inputs(case: RecordedCase, prefix: str, image_token_id: int) -> dict:
    """Our `input_ids`/`attention_mask` for the forward (`prefix=''`, right padding) or generate (`prefix='gen_'`,
    left padding) inputs of a case, padded with the case's pad id."""
    ids, mask = case.tensors[f"{prefix}input_ids"], case.tensors[f"{prefix}attention_mask"]
    pad_id = case.info["gen_kwargs"]["pad_token_id"]
    rows = [
        expand_image_tokens(
            ids[row].tolist(), mask[row].tolist(), case.image_token_counts(row), image_token_id, image_token_id + 1
        )
        for row in range(ids.shape[0])
    ]
    length = max(len(row_ids) for row_ids, _ in rows)
    batch_ids, batch_mask = [], []
    for row_ids, row_mask in rows:
        padding = length - len(row_ids)
        if prefix == "gen_":
            batch_ids.append([pad_id] * padding + row_ids)
            batch_mask.append([0] * padding + row_mask)
        else:
            batch_ids.append(row_ids + [pad_id] * padding)
            batch_mask.append(row_mask + [0] * padding)
    return {"input_ids": torch.tensor(batch_ids), "attention_mask": torch.tensor(batch_mask)}


def assert_layout_matches_recording(inputs: dict, case: RecordedCase, prefix: str, image_token_id: int) -> None:
    """Our expanded sequence puts image features, text tokens and padding where the original code put them."""
    layout = "fwd_" if prefix == "" else "gen_"
    original_ids = case.tensors[f"{prefix}input_ids"]
    if f"{layout}token_type" not in case.tensors:  # text-only generate: no expansion recorded
        assert torch.equal(inputs["input_ids"], original_ids)
        return
    token_type = case.tensors[f"{layout}token_type"].long()
    source = case.tensors[f"{layout}src_index"].long()
    assert inputs["input_ids"].shape == token_type.shape
    assert torch.equal(inputs["input_ids"] == image_token_id, token_type == 1)
    text = token_type == 0
    assert torch.equal(inputs["input_ids"][text], original_ids.gather(1, source.where(text, 0))[text])
    assert torch.equal(inputs["attention_mask"], case.tensors[f"{layout}expanded_attention_mask"].long())


def assert_forward_matches_recording(logits: torch.Tensor, loss: torch.Tensor, case: RecordedCase) -> dict:
    """Logits at every attended position and the loss, within float32 tolerance; returns the largest differences."""
    recorded = case.tensors
    attended = recorded["fwd_expanded_attention_mask"].bool()
    positions = recorded["fwd_logits_full_pos"].long()
    full_diff = (logits[positions[:, 0], positions[:, 1]] - recorded["fwd_logits_full"]).abs().max()
    columns = logits[..., recorded["logit_col_ids"].long()]
    columns_diff = (columns[attended] - recorded["fwd_logits_cols"][attended]).abs().max()
    max_diff = (logits.amax(-1)[attended] - recorded["fwd_logits_max"][attended]).abs().max()
    lse_diff = (logits.logsumexp(-1)[attended] - recorded["fwd_logits_lse"][attended]).abs().max()
    # The recorded argmax must be a top logit of ours up to the tolerance (an exact tie-break would be fragile).
    at_recorded_argmax = logits.gather(-1, recorded["fwd_logits_argmax"].long().unsqueeze(-1)).squeeze(-1)
    argmax_gap = (logits.amax(-1) - at_recorded_argmax)[attended].max()
    diffs = {
        "logits_full": full_diff.item(),
        "logits_cols": columns_diff.item(),
        "max": max_diff.item(),
        "logsumexp": lse_diff.item(),
        "argmax_gap": argmax_gap.item(),
        "loss": (loss - recorded["fwd_loss"]).abs().item(),
    }
    assert all(value <= LOGITS_ATOL for value in diffs.values()), diffs
    return diffs


def generate_like_original(model, inputs: dict, kwargs: dict, **model_inputs) -> torch.Tensor:
    """Runs our `generate` with a case's recorded generation kwargs and returns what the original returned: only the
    new tokens when images were given (the original fed `inputs_embeds`), prompt + new tokens otherwise."""
    kwargs = dict(kwargs)
    prompt_length = inputs["input_ids"].shape[1]
    penalty = kwargs.pop("repetition_penalty", None)
    if penalty is not None:
        # The original prompt reached HF `generate` as inputs_embeds, so its repetition penalty only ever saw the
        # generated ids; `prompt_ignore_length` makes ours skip the prompt the same way.
        kwargs["logits_processor"] = LogitsProcessorList(
            [RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=prompt_length)]
        )
    output = model.generate(**inputs, **model_inputs, **kwargs)
    return output[:, prompt_length:] if model_inputs else output
