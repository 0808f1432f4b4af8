"""Text -> ids -> text with the real Phi-3 vocabulary: every string the original setup tokenized
(`tests/fixtures/phi3_tokenizer/reference_ids.json`) gives the original ids through the tokenizer, a folder the
converter writes, the processor and chat template, and `trust_remote_code` without this package; training labels are
the spans the released models were trained on; generations decode to the answer."""

import itertools
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, AutoTokenizer

from isolation import run_isolated
from library_versions import needs_assistant_masks_with_images
from modeling_xgenmm.checkpoint.convert import convert_original_checkpoint
from modeling_xgenmm.train.collators import XGenMMDataCollator, XGenMMPreferenceCollator
from paths import PHI3_TOKENIZER, original_fixtures_dir
from processing_helpers import synthetic_image
from xgenmm_processing import XGenMMTokenizer


pytestmark = pytest.mark.core


CASES = json.loads((PHI3_TOKENIZER / "reference_ids.json").read_text())["cases"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)


@pytest.fixture(scope="module")
def tokenizer():
    return XGenMMTokenizer.from_pretrained(PHI3_TOKENIZER)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> "Path":  # noqa: F821
    """The converter's output for an original instruct checkpoint with the released vocabulary: the tiny fixture
    checkpoint with its vocabulary rows grown to Phi-3's 32064 (random), and the released tokenizer files."""
    fixtures, folder = original_fixtures_dir(), tmp_path_factory.mktemp("real-vocabulary")
    original = shutil.copytree(fixtures / "checkpoints" / "instruct", folder / "original")
    released = XGenMMTokenizer.from_pretrained(PHI3_TOKENIZER)
    initial_tokenizer_len, rows = len(released) - 3, 32064
    weights = load_file(original / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    for name in ("vlm.lang_model.model.embed_tokens.weight", "vlm.lang_model.lm_head.weight"):
        weights[name] = torch.randn(rows, weights[name].shape[1], generator=generator) * 0.02
    weights["vlm.lang_model.lm_head.bias"] = torch.zeros(rows)
    save_file(weights, original / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((original / "config.json").read_text())
    config["text_config"] |= {"initial_tokenizer_len": initial_tokenizer_len, "vocab_size": rows}
    config["text_config"] |= {"eos_token_id": released.eos_token_id, "pad_token_id": released.eos_token_id}
    (original / "config.json").write_text(json.dumps(config))
    (original / "generation_config.json").unlink()
    for name in TOKENIZER_FILES:
        shutil.copyfile(PHI3_TOKENIZER / name, original / name)
    return convert_original_checkpoint(original, folder / "converted", dtype=torch.float32)


def collapse_images(ids: list[int], image_id: int, placeholder_id: int) -> list[int]:
    """One `<image>` per image: runs of `<image>` (the processor's expansion) and the `<image placeholder>` tokens of
    the original base prompts after an `<image>` become a single `<image>`."""
    collapsed = []
    for token in ids:
        if token == placeholder_id or (token == image_id and collapsed and collapsed[-1] == image_id):
            continue
        collapsed.append(token)
    return collapsed


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_tokenizer_gives_the_original_ids(tokenizer, name):
    text, expected = CASES[name]["text"], CASES[name]["ids"]
    assert tokenizer(text)["input_ids"] == expected
    assert tokenizer.encode(text) == expected
    assert tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) == expected


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batches_give_the_original_ids(tokenizer, padding_side):
    texts = [case["text"] for case in CASES.values()]
    batch = tokenizer(texts, padding=True, padding_side=padding_side, return_tensors="pt")
    for row, case in enumerate(CASES.values()):
        assert batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist() == case["ids"], row


def test_offsets_are_in_the_callers_text(tokenizer):
    text = CASES["instruct_single_image"]["text"]
    out = tokenizer(text, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"])
    assert tokens[:2] == ["▁", "<|system|>"]
    assert out["offset_mapping"][:2] == [(0, 0), (0, len("<|system|>\n"))]  # the leading ▁ is not in the text
    assert out.char_to_token(text.index("What")) == tokens.index("What")


def test_a_folder_the_converter_writes_gives_the_original_ids(converted):
    loaded = AutoTokenizer.from_pretrained(converted)
    assert type(loaded) is XGenMMTokenizer
    for name, case in CASES.items():
        assert loaded(case["text"])["input_ids"] == case["ids"], name


def test_trust_remote_code_without_the_package_gives_the_original_ids(converted, tmp_path):
    texts = {name: case["text"] for name, case in CASES.items()}
    code = f"""
    import json
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained({str(converted)!r}, trust_remote_code=True)
    texts = json.loads({json.dumps(texts)!r})
    print(json.dumps({{name: processor.tokenizer(text)["input_ids"] for name, text in texts.items()}}))
    """
    ids = run_isolated(code, tmp_path)
    assert ids == {name: case["ids"] for name, case in CASES.items()}


def test_the_processor_gives_the_original_ids_around_each_image(converted):
    processor = AutoProcessor.from_pretrained(converted)
    image_id, placeholder_id = processor.tokenizer.convert_tokens_to_ids(["<image>", "<image placeholder>"])
    for name, case in CASES.items():
        marked = collapse_images(case["ids"], image_id, placeholder_id)
        images = [synthetic_image("RGB", 64, 48, seed=index) for index in range(marked.count(image_id))]
        out = processor(text=case["text"], images=images or None)
        assert collapse_images(out["input_ids"][0], image_id, placeholder_id) == marked, name


@pytest.mark.parametrize(
    "name, user_content, answer",
    [
        ("instruct_single_image", [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}], None),
        ("instruct_two_images", [{"type": "image"}, {"type": "image"}, "What is the difference between these "
                                 "two images?"], None),
        ("instruct_prompt_plus_answer", [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}],
         "The image shows a red bus on a city street."),
    ],
)  # fmt: skip
def test_the_chat_template_gives_the_released_prompts_and_their_ids(converted, name, user_content, answer):
    processor = AutoProcessor.from_pretrained(converted)
    content = [block if isinstance(block, dict) else {"type": "text", "text": block} for block in user_content]
    images = iter(synthetic_image("RGB", 64, 48, seed=index) for index in range(len(content)))
    content = [{"type": "image", "image": next(images)} if block["type"] == "image" else block for block in content]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    rendered = processor.apply_chat_template(messages, add_generation_prompt=answer is None)
    expected_text = CASES[name]["text"] + ("\n" if answer is not None else "")  # the template ends every turn
    assert rendered == expected_text
    out = processor.apply_chat_template(
        messages, add_generation_prompt=answer is None, tokenize=True, return_dict=True
    )
    image_id, placeholder_id = processor.tokenizer.convert_tokens_to_ids(["<image>", "<image placeholder>"])
    assert collapse_images(out["input_ids"][0], image_id, placeholder_id) == CASES[name]["ids"]


# --- training sees what the released models saw ---------------------------------------------------------------------


def original_training_targets(tokenizer, conversation: str) -> tuple[list[int], list[int]]:
    """The ids and targets of the released models' SFT (LAVIS `preprocess_phi_3_new`): the conversation tokenized
    whole; then, round by round (rounds end at `<|end|>\\n`), the system round and each user round (with the
    `<|assistant|>\\n` after it, less its first id after the first round) are masked and each assistant round (less
    the ids of `<|assistant|>\\n` tokenized alone) is a target. A sample whose rounds do not add up to the whole is
    masked entirely; that only balances with the leading "▁" of each separately tokenized round."""
    ids = tokenizer(conversation)["input_ids"]
    targets, position = list(ids), 0
    rounds = [piece + "<|end|>\n" for piece in conversation.split("<|end|>\n") if piece]
    for index, piece in enumerate(rounds):
        if "<|assistant|>\n" in piece:
            length = len(tokenizer(piece)["input_ids"]) - len(tokenizer("<|assistant|>\n")["input_ids"])
        else:
            if "<|user|>" in piece:
                piece += "<|assistant|>\n"
            length = len(tokenizer(piece)["input_ids"]) - (1 if index > 0 and "<|user|>" in piece else 0)
            targets[position : position + length] = [-100] * length
        position += length
    assert position == len(ids), f"the rounds add up to {position} ids, the whole conversation has {len(ids)}"
    return ids, targets


def test_rounds_tokenized_one_by_one_add_up_to_the_whole_conversation(tokenizer):
    text = CASES["instruct_multi_turn"]["text"] + "Red.<|end|>\n"
    ids, _ = original_training_targets(tokenizer, text)
    assert ids == tokenizer(text)["input_ids"]


@needs_assistant_masks_with_images
def test_sft_labels_are_the_released_training_targets_on_a_multi_turn_conversation(converted):
    processor = AutoProcessor.from_pretrained(converted)
    tokenizer = processor.tokenizer
    answers = ["A black and white cat sitting on a red sofa.", "Red.", "  It looks comfortable.\n\nYes."]
    questions = ["What is in the picture?", "What color is the sofa?", "Is it comfortable?"]
    messages = [{"role": "system", "content": SYSTEM}]
    for index, (question, answer) in enumerate(zip(questions, answers)):
        content = [{"type": "image"}, {"type": "text", "text": question}] if index == 0 else question
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    row = {"messages": messages, "images": [synthetic_image("RGB", 64, 48)]}
    batch = XGenMMDataCollator(processor)([row])
    image_id, placeholder_id = tokenizer.convert_tokens_to_ids(["<image>", "<image placeholder>"])

    # The original's text (its chat format, answers as they are, one <image> marker) and targets, rule by rule.
    markers = ["<image>\n", "", ""]
    turns = [
        f"<|user|>\n{marker}{question}<|end|>\n<|assistant|>\n{answer}<|end|>\n"
        for marker, question, answer in zip(markers, questions, answers)
    ]
    original_text = f"<|system|>\n{SYSTEM}<|end|>\n" + "".join(turns)
    ids, targets = original_training_targets(tokenizer, original_text)
    collapsed = collapse_images(batch["input_ids"][0].tolist(), image_id, placeholder_id)
    assert collapsed == ids
    labels = batch["labels"][0].tolist()
    first_image = labels.index(-100, batch["input_ids"][0].tolist().index(image_id))
    image_tokens = int((batch["input_ids"][0] == image_id).sum())
    assert labels[:first_image] + labels[first_image + image_tokens - 1 :] == targets
    # The spans decode to exactly the answers (leading whitespace is taken by <|assistant|>) and their <|end|>.
    spans = [
        tokenizer.decode([token for token, _ in run])
        for is_target, run in itertools.groupby(
            zip(batch["input_ids"][0].tolist(), labels), lambda pair: pair[1] != -100
        )
        if is_target
    ]
    assert spans == [answer.lstrip() + "<|end|>" for answer in answers]


def test_dpo_completion_spans_are_the_answers_in_their_prompts_context(converted):
    processor = AutoProcessor.from_pretrained(converted)
    row = {
        "images": [synthetic_image("RGB", 64, 48)],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
        "chosen": [{"role": "assistant", "content": "A cat."}],
        "rejected": [{"role": "assistant", "content": "A dog on a sofa."}],
    }
    batch = XGenMMPreferenceCollator(processor=processor)([row])
    completions = [
        processor.tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(batch["input_ids"], batch["completion_mask"])
    ]
    assert completions == ["A cat.<|end|>", "A dog on a sofa.<|end|>"]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": row["images"][0]}, row["prompt"][0]["content"][1]]}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"][0]
    assert batch["input_ids"][0][: len(prompt)].tolist() == prompt  # the prompt as generation sees it


# --- ids -> text ----------------------------------------------------------------------------------------------------


def test_a_generation_cut_at_end_of_turn_decodes_to_the_answer(converted):
    processor = AutoProcessor.from_pretrained(converted)
    tokenizer = processor.tokenizer
    prompt = tokenizer(CASES["instruct_single_image"]["text"])["input_ids"]
    answer = "The image shows a red bus on a city street."
    # What the released model generates after `<|assistant|>\n`: the answer as the original tokenized it, <|end|>.
    generated = tokenizer(CASES["instruct_prompt_plus_answer"]["text"])["input_ids"][len(prompt) :]
    assert tokenizer.convert_ids_to_tokens(generated[-1:]) == ["<|end|>"]
    padded = generated + [tokenizer.pad_token_id] * 3
    assert processor.post_process_image_text_to_text([padded]) == [answer]
    assert processor.post_process_image_text_to_text(prompt + padded) == answer
    # The original model cards' decoding keeps working: decode, then cut at <|end|>.
    assert tokenizer.decode(padded, skip_special_tokens=True).split("<|end|>")[0] == answer
    assert tokenizer.decode(padded, skip_special_tokens=False).split("<|end|>")[0] == answer


# --- folders without tokenizer.json ---------------------------------------------------------------------------------


def test_a_folder_without_any_tokenizer_file_is_refused_naming_the_files(tmp_path):
    shutil.copyfile(PHI3_TOKENIZER / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    with pytest.raises(OSError, match=r"needs tokenizer.json \(or the sentencepiece tokenizer.model\)"):
        XGenMMTokenizer.from_pretrained(tmp_path)


def test_a_folder_with_only_tokenizer_model_says_what_reading_it_needs(tmp_path, monkeypatch):
    shutil.copyfile(PHI3_TOKENIZER / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x00")  # any content: the packages are checked first
    monkeypatch.setattr("xgenmm_processing.tokenization_xgenmm._importable", lambda name: False)
    expected = r"has tokenizer.model but no tokenizer.json; .* needs the packages sentencepiece and protobuf"
    with pytest.raises(OSError, match=expected):
        XGenMMTokenizer.from_pretrained(tmp_path)
