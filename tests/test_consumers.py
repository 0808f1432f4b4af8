"""The package's outputs cut the way their consumers cut them: serving engines split processor outputs per image by
`num_image_patches`, pipelines concatenate per-item outputs, and TRL's GRPOTrainer slices each sample's images for
its log-probabilities by `num_images`."""

import re

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from hub_helpers import tiny_instruct_model
from processing_helpers import synthetic_image, tiny_processor


pytestmark = pytest.mark.core


# (width, height) under the tiny-random grid: 40x200 -> 3x1 crops + the global view (4 views), 60x30 -> 1x2 (3 views).
TALL, WIDE, SQUARE = (40, 200), (60, 30), (56, 56)


def images_of(sizes, seed: int = 0) -> list:
    return [synthetic_image("RGB", width, height, seed=seed + index) for index, (width, height) in enumerate(sizes)]


def split_like_a_serving_engine(outputs, num_image_patches: list[int]) -> list[dict]:
    """vLLM's Transformers backend: every image field is cut along its first dimension by `num_image_patches`
    (`MultiModalFieldConfig.flat_from_sizes`), one item per image."""
    fields = {key: value for key, value in outputs.items() if key in ("pixel_values", "image_sizes")}
    pieces = {key: value.split(num_image_patches) for key, value in fields.items()}
    return [{key: pieces[key][index] for key in fields} for index in range(len(num_image_patches))]


def test_a_two_image_prompt_splits_per_image_into_what_each_image_alone_gives():
    processor = tiny_processor()
    tall, wide = images_of([TALL, WIDE])
    batched = processor(
        images=[[tall, wide], [wide]],
        text=["<image> and <image>: which is wider?", "Describe <image>."],
        padding=True,
        return_mm_token_type_ids=True,
        return_tensors="pt",
    )
    data = processor._get_num_multimodal_tokens(image_sizes=batched["image_sizes"].tolist())
    assert data.num_image_patches == [1, 1, 1] and data.num_image_tokens == [32, 24, 24]  # 4, 3, 3 views x 8
    items = split_like_a_serving_engine(batched, data.num_image_patches)
    for item, image in zip(items, [tall, wide, wide]):
        alone = processor.image_processor(image, return_tensors="pt")
        assert torch.equal(item["pixel_values"], alone["pixel_values"])
        assert torch.equal(item["image_sizes"], alone["image_sizes"])
    # The placeholder positions the engine fills: exactly the image tokens, as many per prompt as its images need.
    is_image = batched["input_ids"] == processor.image_token_id
    assert torch.equal(batched["mm_token_type_ids"].bool(), is_image)
    assert is_image.sum(1).tolist() == [32 + 24, 24]

    # The model encodes each item alone into the features the batched call scatters into those positions.
    model = tiny_instruct_model()
    with torch.no_grad():
        together = model.get_image_features(batched["pixel_values"], batched["image_sizes"]).pooler_output
        for item, features in zip(items, together):
            (alone,) = model.get_image_features(item["pixel_values"], item["image_sizes"]).pooler_output
            assert alone.shape == features.shape
            torch.testing.assert_close(alone, features, rtol=1e-5, atol=1e-6)


def test_outputs_of_separate_calls_concatenate_into_one_batch_as_pipelines_do():
    processor = tiny_processor()
    tall, wide = images_of([TALL, WIDE], seed=3)
    together = processor(images=[tall, wide], text="<image><image>", return_tensors="pt")
    separate = [processor(images=[image], text="<image>", return_tensors="pt") for image in (tall, wide)]
    for key in ("pixel_values", "image_sizes"):
        assert torch.equal(torch.cat([out[key] for out in separate]), together[key]), key


# --- TRL's GRPOTrainer ---------------------------------------------------------------------------------------------

PROMPT_IMAGES = [[TALL, WIDE], [SQUARE], [WIDE, SQUARE, TALL], [WIDE]]


def grpo_rows() -> list[dict]:
    """A multi-image dataset in TRL's format: image placeholders in the prompt, the images in `images`."""
    rows = []
    for index, sizes in enumerate(PROMPT_IMAGES):
        content = [{"type": "image"} for _ in sizes] + [{"type": "text", "text": f"Question {index}: which colour?"}]
        rows.append({"prompt": [{"role": "user", "content": content}], "images": images_of(sizes, seed=10 * index)})
        rows[-1]["answer"] = "red"
    return rows


def exact_match(completions, answer, **kwargs) -> list[float]:
    return [float(completion[0]["content"].strip() == expected) for completion, expected in zip(completions, answer)]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_grpo_trainer_runs_and_every_sample_is_scored_with_its_own_images(tmp_path):
    processor = tiny_processor()
    rows = grpo_rows()
    expected_pixels = [processor.image_processor(row["images"], return_tensors="pt")["pixel_values"] for row in rows]
    model = tiny_instruct_model()
    checked = []

    def images_belong_to_their_samples(module, args, kwargs):
        """Each forward that scores completions (policy log-probabilities) gets, for each of its samples in order,
        exactly the pixels of that sample's prompt (found by its question number)."""
        if kwargs.get("pixel_values") is None:
            return
        expected = []
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"]):
            question = re.search(r"Question (\d+):", processor.decode(ids[mask.bool()]))
            expected.append(expected_pixels[int(question.group(1))])
        assert torch.equal(kwargs["pixel_values"], torch.cat(expected))
        checked.append(len(expected))

    model.register_forward_pre_hook(images_belong_to_their_samples, with_kwargs=True)
    config = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=exact_match,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logged)
    assert all(entry["completions/mean_length"] > 0 for entry in logged)
    # Both steps scored their 4 completions (2 prompts x 2 generations) with the prompts' own images.
    assert sum(checked) >= 8
