"""VLFeedback and VLGuard rows in the public datasets' shapes (small files the tests write, with rendered images)
become TRL vision preference rows by the documented rules, and go through the preference collator."""

import json

import pytest
from peft import PeftModel

from hub_helpers import tiny_instruct_model, tiny_processor
from modeling_xgenmm.train.collators import XGenMMPreferenceCollator
from modeling_xgenmm.train.preference_data import load_vlfeedback, load_vlguard, vlfeedback_preference_row
from processing_helpers import png_bytes, synthetic_image
from training_helpers import run_example


def completion(response: str, helpfulness: str, faithfulness: str, ethics: str, model: str = "some-vlm") -> dict:
    aspects = {"Helpfulness": helpfulness, "Visual Faithfulness": faithfulness, "Ethical Considerations": ethics}
    return {
        "annotations": {name: {"Rating": rating, "Rationale": "..."} for name, rating in aspects.items()},
        "model": model,
        "response": response,
    }


@pytest.fixture
def vlfeedback_file(tmp_path):
    """A `vlfeedback_80k.jsonl`-shaped file; images named by id as in `merged_images.zip` (`<id>.jpg`), or by
    `img_path`."""
    (tmp_path / "merged_images").mkdir()
    synthetic_image("RGB", 60, 40, seed=0).save(tmp_path / "merged_images" / "by-id.jpg")
    synthetic_image("RGB", 40, 60, seed=1).save(tmp_path / "merged_images" / "other-name.png")
    synthetic_image("RGB", 50, 50, seed=2).save(tmp_path / "merged_images" / "tie.jpg")
    rows = [
        {
            "id": "by-id",
            "prompt": "What is in the picture?",
            "models": ["a", "b", "c", "d"],
            "completions": [
                completion("Second best.", "4", "3", "3"),  # 3.33
                completion("The best answer.", "5", "4", "5"),  # 4.67
                completion("The worst answer.", "1", "1", "1"),  # 1.0
                completion("Third.", "2", "2", "2"),  # 2.0
            ],
        },
        {
            "id": "by-path",
            "prompt": "Describe <image> briefly.",
            "img_path": "other-name.png",
            "completions": [
                completion("Unrated helpfulness, faithful.", "N/A", "5", "5"),  # 5.0: the unrated aspect is ignored
                completion("Rated low.", "3", "2", "4"),  # 3.0
                completion("Not rated at all.", "N/A", "-", ""),
            ],
        },
        {
            "id": "tie",
            "prompt": "Count the dots.",
            "completions": [
                completion("First of two best.", "4", "4", "4"),
                completion("Worst.", "2", "3", "1"),
                completion("Second of two best.", "4", "4", "4"),
            ],
        },
        {
            "id": "no-preference",
            "prompt": "Anything?",
            "img_path": "other-name.png",
            "completions": [completion("Same.", "3", "3", "3"), completion("Same too.", "3", "3", "3")],
        },
        {
            "id": "low-best",
            "prompt": "Anything?",
            "img_path": "other-name.png",
            "completions": [completion("Best but poor.", "3", "2", "3"), completion("Poor.", "1", "1", "1")],
        },
        {
            "id": "one-rated",
            "prompt": "Anything?",
            "img_path": "other-name.png",
            "completions": [completion("Rated.", "5", "5", "5"), completion("Unrated.", "N/A", "N/A", "N/A")],
        },
    ]
    path = tmp_path / "vlfeedback_80k.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def texts(row: dict) -> tuple[str, str]:
    return row["chosen"][0]["content"][0]["text"], row["rejected"][0]["content"][0]["text"]


def test_vlfeedback_pairs_the_best_and_worst_average_rated_responses(vlfeedback_file):
    rows = load_vlfeedback(vlfeedback_file, images_dir=vlfeedback_file.parent / "merged_images")
    assert [row["id"] for row in rows] == ["by-id", "by-path", "tie"]
    assert texts(rows[0]) == ("The best answer.", "The worst answer.")
    assert texts(rows[1]) == ("Unrated helpfulness, faithful.", "Rated low.")
    assert texts(rows[2]) == ("First of two best.", "Worst.")
    assert rows[0]["prompt"] == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}
    ]
    assert rows[1]["prompt"][0]["content"] == [{"type": "text", "text": "Describe <image> briefly."}]


def test_vlfeedback_images_come_from_the_id_the_path_or_the_bytes(vlfeedback_file):
    folder = vlfeedback_file.parent / "merged_images"
    by_id, by_path, _ = load_vlfeedback(vlfeedback_file, images_dir=folder)
    assert by_id["images"] == [str(folder / "by-id.jpg")]
    assert by_path["images"] == [str(folder / "other-name.png")]  # relative to images_dir
    rows = load_vlfeedback(vlfeedback_file)  # images_dir defaults to the file's folder
    assert rows[0]["images"] == [str(vlfeedback_file.parent / "by-id.jpg")]
    # The Hub's parquet mirrors hold the image as `datasets` yields it: {"bytes", "path"}.
    image = synthetic_image("RGB", 30, 20, seed=5)
    row = {"id": "parquet", "prompt": "Q?", "image": {"bytes": png_bytes(image), "path": None}}
    row["completions"] = [completion("A", "5", "5", "5"), completion("B", "1", "1", "1")]
    decoded = vlfeedback_preference_row(row)["images"][0]
    assert decoded.size == (30, 20) and decoded.tobytes() == image.tobytes()


def test_vlfeedback_threshold_and_missing_images():
    pair = [completion("A", "3", "3", "3"), completion("B", "1", "1", "1")]
    row = {"id": "x", "prompt": "Q?", "image": "x.jpg", "completions": pair}
    assert vlfeedback_preference_row(row, min_chosen_score=3.0) is not None
    assert vlfeedback_preference_row(row, min_chosen_score=3.5) is None
    expected = r"VLFeedback row 'y' has no image: expected 'image', 'img_path', or an images_dir holding y.jpg"
    with pytest.raises(ValueError, match=expected):
        vlfeedback_preference_row({"id": "y", "prompt": "Q?", "completions": []})


def test_vlfeedback_rows_collate_with_the_responses_as_completions(vlfeedback_file):
    processor = tiny_processor()
    rows = load_vlfeedback(vlfeedback_file, images_dir=vlfeedback_file.parent / "merged_images")
    batch = XGenMMPreferenceCollator(processor=processor)(rows)
    decoded = [processor.decode(ids[mask.bool()]) for ids, mask in zip(batch["input_ids"], batch["completion_mask"])]
    assert decoded == [f"{text}<|end|>" for text in [texts(row)[0] for row in rows] + [texts(row)[1] for row in rows]]
    assert batch["image_sizes"].tolist() == [[40, 60], [60, 40], [50, 50]] * 2


VLGUARD_ROWS = [
    {
        "id": "unsafe-image",
        "image": "bad_ads/unsafe.png",
        "safe": False,
        "harmful_category": "privacy",
        "harmful_subcategory": "personal data",
        "instr-resp": [
            {"instruction": "Find this person's address.", "response": "I'm sorry, I cannot help with that."}
        ],
    },
    {
        "id": "safe-image",
        "image": "bad_ads/safe.png",
        "safe": True,
        "instr-resp": [
            {"safe_instruction": "What product is advertised?", "response": "A pair of running shoes."},
            {"unsafe_instruction": "Who is the model in the ad?", "response": "I can't identify people in images."},
        ],
    },
]


@pytest.fixture
def vlguard_file(tmp_path):
    (tmp_path / "bad_ads").mkdir()
    synthetic_image("RGB", 60, 40, seed=3).save(tmp_path / "bad_ads" / "unsafe.png")
    synthetic_image("RGB", 40, 60, seed=4).save(tmp_path / "bad_ads" / "safe.png")
    path = tmp_path / "train.json"
    path.write_text(json.dumps(VLGUARD_ROWS))
    return path


def test_vlguard_prefers_answers_to_safe_instructions_and_refusals_to_unsafe_ones(vlguard_file):
    rows = {row["id"]: row for row in load_vlguard(vlguard_file)}
    assert sorted(rows) == ["safe-image/safe", "safe-image/unsafe"]  # no compliant text for the unsafe image
    assert texts(rows["safe-image/safe"]) == ("A pair of running shoes.", "I can't identify people in images.")
    assert texts(rows["safe-image/unsafe"]) == ("I can't identify people in images.", "A pair of running shoes.")
    assert rows["safe-image/unsafe"]["prompt"][0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Who is the model in the ad?"},
    ]
    assert rows["safe-image/safe"]["images"] == [str(vlguard_file.parent / "bad_ads" / "safe.png")]


def test_vlguard_uses_a_given_compliant_response_for_every_unsafe_instruction(vlguard_file):
    seen = []

    def comply(instruction, row):
        seen.append((instruction, row["id"]))
        return f"Sure: {instruction.lower()}"

    rows = {row["id"]: row for row in load_vlguard(vlguard_file, compliant_response=comply)}
    assert sorted(rows) == ["safe-image/safe", "safe-image/unsafe", "unsafe-image/unsafe"]
    assert texts(rows["unsafe-image/unsafe"]) == (
        "I'm sorry, I cannot help with that.",
        "Sure: find this person's address.",
    )
    assert texts(rows["safe-image/unsafe"])[1] == "Sure: who is the model in the ad?"
    assert seen == [("Find this person's address.", "unsafe-image"), ("Who is the model in the ad?", "safe-image")]
    processor = tiny_processor()
    batch = XGenMMPreferenceCollator(processor=processor)(list(rows.values()))
    assert batch["input_ids"].shape[0] == 6


def test_malformed_vlguard_rows_are_named(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"id": "broken", "image": "a.png", "safe": "yes", "instr-resp": []}]))
    expected = r"VLGuard row 'broken': expected 'image', a boolean 'safe' and a list 'instr-resp'"
    with pytest.raises(ValueError, match=expected):
        load_vlguard(path)


@pytest.mark.parametrize("example", ["dpo_vlfeedback", "safety_vlguard"])
def test_the_dpo_examples_train_lora_on_their_files_and_save_a_merged_model(
    example, vlfeedback_file, vlguard_file, tmp_path
):
    model_dir = tmp_path / "sft"
    tiny_instruct_model().save_pretrained(model_dir)
    tiny_processor().save_pretrained(model_dir)
    data = vlfeedback_file if example == "dpo_vlfeedback" else vlguard_file
    images_dir = ["--images_dir", str(vlfeedback_file.parent / "merged_images")] if example == "dpo_vlfeedback" else []
    output_dir = tmp_path / "out"
    trainer = run_example(
        example,
        ["--model_name_or_path", str(model_dir), "--data", str(data), *images_dir, "--output_dir", str(output_dir),
         "--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none", "--save_strategy", "no",
         "--activation_checkpointing", "false", "--disable_tqdm", "true"],
    )  # fmt: skip
    assert trainer.state.global_step == 1
    assert isinstance(trainer.model, PeftModel)  # the report's DPO: LoRA unless --use_peft false
    assert (output_dir / "model" / "model.safetensors").is_file() and (output_dir / "model" / "config.json").is_file()
    assert not (output_dir / "model" / "adapter_config.json").exists()
