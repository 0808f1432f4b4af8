"""The project's catalogue of bad inputs, faults and misuses: each with the exact error it must raise (naming what was
wrong and what was expected) or the exact result it must give. Other test modules test the same classes in depth;
this one keeps the list in one place, by area."""

import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

import xgenmm_processing.image_processing_xgenmm as image_processing
from hub_helpers import tiny_instruct_model, tiny_processor
from modeling_xgenmm import XGenMMConfig
from modeling_xgenmm.checkpoint.convert import convert_original_checkpoint
from modeling_xgenmm.checkpoint.folders import ModelFolderError
from modeling_xgenmm.checkpoint.key_map import OriginalCheckpointError
from modeling_xgenmm.cli import main
from modeling_xgenmm.hub.publish import PublishError, prepare_hub_folder, publish
from modeling_xgenmm.train.collators import BadSampleError, XGenMMDataCollator, XGenMMPreferenceCollator
from modeling_xgenmm.train.loading import load_model_and_processor
from modeling_xgenmm.train.preference_data import load_vlfeedback, load_vlguard
from paths import TINY_RANDOM, original_fixtures_dir
from processing_helpers import synthetic_image
from processing_helpers import tiny_processor as tiny_image_processor


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def model():
    return tiny_instruct_model()


@pytest.fixture
def silent_server():
    """A local server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    connections = []

    def accept():
        while True:
            try:
                connections.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def short_image_timeouts(monkeypatch):
    monkeypatch.setattr(image_processing, "IMAGE_URL_TIMEOUT", 0.5)
    monkeypatch.setattr(image_processing, "IMAGE_URL_ATTEMPTS", 2)


def image_of(mode="RGB", width=40, height=30):
    return synthetic_image(mode, width, height)


# --- images and the processor ---------------------------------------------------------------------------------------

IMAGE_CASES = [
    ("empty PIL image", lambda: PIL.Image.new("RGB", (0, 0)), ValueError, r"image 0 is empty \(0x0 pixels"),
    ("integer array", lambda: np.zeros((8, 8, 3), np.int32), TypeError, r"dtype int32; expected uint8 pixels"),
    (
        "float array above 1",
        lambda: np.full((8, 8, 3), 2.0),
        ValueError,
        r"values from 2 to 2; expected values in \[0",
    ),
    ("NaN float array", lambda: np.full((8, 8, 3), np.nan), ValueError, r"a float array with values from nan"),
    (
        "five channels",
        lambda: np.zeros((8, 8, 5), np.uint8),
        ValueError,
        r"shape \(8, 8, 5\); expected \(height, width\)",
    ),
    ("float image above 1", lambda: PIL.Image.fromarray(np.full((4, 4), 3.0, np.float32)), ValueError, r"mode F"),
    ("negative 32-bit image", lambda: PIL.Image.fromarray(np.full((4, 4), -5, np.int32)), ValueError, r"mode I"),
    ("missing file", lambda: "/no/such/dir/cat.png", ValueError, r"image file not found: '/no/such/dir/cat.png'"),
    ("not base64 nor a file", lambda: "hello there", ValueError, r"is not an image URL .*, an existing file, nor"),
    ("a number", lambda: 7, TypeError, r"images must be PIL images, numpy arrays, torch tensors or URL/path"),
]


@pytest.mark.parametrize("name, make, error, message", IMAGE_CASES, ids=[case[0] for case in IMAGE_CASES])
def test_bad_images_are_refused_by_both_backends(name, make, error, message):
    for backend in ("pil", "torchvision"):
        processor = tiny_image_processor(backend)
        with pytest.raises(error, match=message):
            processor(images=make(), text="<image> Hi")


PROCESSOR_CASES = [
    ("more images than markers", {"images": [image_of(), image_of()], "text": "<image> one"},
     r"Found total 1 <image> tokens and 2 images"),
    ("markers without images", {"text": ["<image> a", "b"]}, r"Found 1 <image> tokens in the text but no images"),
    ("images for fewer samples", {"images": [[image_of()]], "text": ["<image>", "x"]}, r"images are given for 1"),
    ("neither text nor images", {}, r"needs text, images or both; got neither"),
    ("text not a string", {"text": [["tokens"]]}, r"sample 0 is a list"),
    ("truncation inside an image",
     {"images": image_of(), "text": "<image> hi", "truncation": True, "max_length": 5},
     r"sample 0: truncation keeps 5 of its 24 <image> tokens; truncation may only cut text, never an image"),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs, message", PROCESSOR_CASES, ids=[case[0] for case in PROCESSOR_CASES])
def test_bad_processor_calls_are_refused(processor, name, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        processor(**kwargs)


def test_an_image_url_that_never_answers_fails_naming_it_in_bounded_time(
    processor, silent_server, short_image_timeouts
):
    url = f"{silent_server}/cat.png"
    started = time.perf_counter()
    expected = rf"the image at '{url}' could not be fetched: no answer within 0.5 s \(timeout\) \(after 2 attempts\)"
    with pytest.raises(ValueError, match=expected):
        processor(images=url, text="<image> Hi")
    with pytest.raises(ValueError, match=expected):  # the chat template path (the pipeline's chat input) too
        chat = [{"role": "user", "content": [{"type": "image", "url": url}, {"type": "text", "text": "Hi"}]}]
        processor.apply_chat_template(chat, tokenize=True, return_dict=True)
    assert time.perf_counter() - started < 10


def test_image_urls_that_fail_say_why(processor, short_image_timeouts):
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ValueError, match=rf"http://127.0.0.1:{port}/x.png' could not be fetched: the connection was"):
        processor(images=f"http://127.0.0.1:{port}/x.png", text="<image>")
    with pytest.raises(ValueError, match=r"could not be fetched: the host name could not be resolved \(DNS"):
        processor(images="http://no-such-host.invalid/x.png", text="<image>")


def test_training_rows_with_an_unreachable_image_url_are_skipped_and_counted(silent_server, short_image_timeouts):
    processor = tiny_processor()
    collator = XGenMMDataCollator(processor, on_bad_sample="skip")
    good = {"image": image_of(), "caption": "A red one."}
    bad = {"id": "far", "image": f"{silent_server}/far.png", "caption": "Far away."}
    batch = collator([good, bad])
    assert collator.num_skipped == 1 and batch["input_ids"].shape[0] == 1


# --- chats ----------------------------------------------------------------------------------------------------------

CHAT_CASES = [
    ("contents instead of content", [{"role": "user", "contents": "Hi"}], r"message 0 has no 'content' \(its keys"),
    ("content None", [{"role": "user", "content": None}], r"message 0 has no 'content' \(its keys: \['role'\]\)"),
    ("text block without text", [{"role": "user", "content": [{"type": "text"}]}], r"block 0 is a text block"),
    ("unknown block type", [{"role": "user", "content": [{"type": "audio"}]}], r"block 0 is \{'type': 'audio'\}"),
    ("unknown role", [{"role": "bot", "content": "Hi"}], r"message 0 has role 'bot'; expected one of"),
]


@pytest.mark.parametrize("name, chat, message", CHAT_CASES, ids=[case[0] for case in CHAT_CASES])
def test_malformed_chats_are_refused(processor, name, chat, message):
    with pytest.raises(ValueError, match=message):
        processor.apply_chat_template(chat, add_generation_prompt=True)


# --- model inputs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(processor):
    return processor(images=image_of(), text="<image> What is it?", return_tensors="pt")


MODEL_CASES = [
    ("integer pixel values", lambda i: {**i, "pixel_values": (i["pixel_values"] * 100).to(torch.uint8)},
     r"pixel_values are torch.uint8; expected the processor's normalised floating-point views"),
    ("views of another size", lambda i: {**i, "pixel_values": torch.zeros(3, 3, 64, 64)},
     r"views of 64x64 pixels, but this model sees 56x56 views \(config.image_size\)"),
    ("zero image size", lambda i: {**i, "image_sizes": torch.tensor([[0, 40]])},
     r"image_sizes\[0\] is \[0, 40\]; every image's size is a \(height, width\) pair of positive numbers"),
    ("empty prompt", lambda i: {"input_ids": torch.zeros(1, 0, dtype=torch.long)}, r"an empty prompt"),
    ("tokens and features disagree", lambda i: {**i, "input_ids": i["input_ids"][:, 3:]},
     r"Image features and image tokens do not match: the text holds 21 image tokens .* produce 24 features"),
]  # fmt: skip


@pytest.mark.parametrize("name, change, message", MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_bad_model_inputs_are_refused(model, inputs, name, change, message):
    with pytest.raises(ValueError, match=message):
        model(**change(dict(inputs)))


def test_generate_with_image_tokens_but_no_images_is_refused(model, inputs):
    with pytest.raises(ValueError, match=r"input_ids hold 24 image tokens but no pixel_values were given to generate"):
        model.generate(input_ids=inputs["input_ids"], max_new_tokens=2)


def test_labels_without_any_target_give_a_zero_loss_not_nan(model, inputs):
    output = model(**inputs, labels=torch.full_like(inputs["input_ids"], -100))
    assert output.loss.item() == 0.0


# --- training rows --------------------------------------------------------------------------------------------------

ROW_CASES = [
    ("empty answer", {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "  "}]},
     r"turn 1 \(assistant\) has no answer text"),
    ("no assistant turn", {"messages": [{"role": "user", "content": "Q?"}]}, r"has no assistant turn to learn from"),
    ("empty document", {"text": "   "}, r"the document text is empty"),
    ("caption without image", {"caption": "A cat.", "image": []}, r"a caption pair has exactly one 'image', got 0"),
    ("unknown format", {"question": "Q?"}, r"unknown row format with keys \['id', 'question'\]"),
    ("markers without images", {"text": "<image> <image>", "images": []}, r"Found 2 <image> tokens in the text"),
]  # fmt: skip


@pytest.mark.parametrize("name, row, message", ROW_CASES, ids=[case[0] for case in ROW_CASES])
def test_degenerate_training_rows_are_refused(processor, name, row, message):
    with pytest.raises(BadSampleError, match=message):
        XGenMMDataCollator(processor)([{"id": "r", **row}])


def preference(**changes) -> dict:
    row = {
        "id": "p",
        "images": [image_of()],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}],
        "chosen": [{"role": "assistant", "content": "Red."}],
        "rejected": [{"role": "assistant", "content": "Blue."}],
    }
    return {**row, **changes}


PREFERENCE_CASES = [
    ("chosen equals rejected", preference(rejected=[{"role": "assistant", "content": " Red. "}]),
     r"chosen and rejected are the same answer"),
    ("empty side", preference(rejected=""), r"turn 0 \(assistant\) has no answer text"),
    ("chosen in the user role", preference(chosen=[{"role": "user", "content": "Red."}]),
     r"the chosen completion has \['user'\] turns; a completion is the assistant's answer"),
    ("prompt ending in an assistant turn", preference(prompt=[
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]},
        {"role": "assistant", "content": "It is"}]), r"the prompt ends with a assistant turn"),
    ("image in a completion", preference(chosen=[{"role": "assistant", "content": "<image> Red."}]),
     r"the chosen completion holds an image"),
    ("no image", preference(images=[], prompt="Color?"), r"has no images, but this run expects an image"),
]  # fmt: skip


@pytest.mark.parametrize("name, row, message", PREFERENCE_CASES, ids=[case[0] for case in PREFERENCE_CASES])
def test_degenerate_preference_rows_are_refused_naming_the_row(processor, name, row, message):
    with pytest.raises(ValueError, match=rf"preference row id 'p'.*{message}"):
        XGenMMPreferenceCollator(processor=processor)([row])


def test_preference_loaders_name_the_file_and_record_and_count_what_they_drop(tmp_path):
    bad = tmp_path / "vlfeedback.jsonl"
    bad.write_text(json.dumps({"id": "a", "prompt": "Q?", "completions": "many"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=rf"{bad}, line 2: not valid JSON"):
        load_vlfeedback(bad)
    bad.write_text(json.dumps({"id": "a", "prompt": "Q?", "completions": "many", "image": "a.png"}) + "\n")
    with pytest.raises(ValueError, match=rf"{bad}: VLFeedback row 'a': 'completions' is a list, got str"):
        load_vlfeedback(bad)
    rated = {"annotations": {"Helpfulness": {"Rating": "4"}}}
    records = [
        {"id": "same", "prompt": "Q?", "image": "a.png", "completions": [{**rated, "response": "A"}] * 2},
        {"id": "one", "prompt": "Q?", "image": "a.png", "completions": [{**rated, "response": "A"}]},
    ]
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(map(json.dumps, records)))
    rows = load_vlfeedback(good)
    assert rows == [] and dict(rows.dropped) == {
        "records whose best and worst responses rate the same": 1,
        "records with fewer than two rated, non-empty responses": 1,
    }
    guard = tmp_path / "train.json"
    unsafe = {"id": "u", "image": "a.png", "safe": False}
    guard.write_text(json.dumps([{**unsafe, "instr-resp": [{"instruction": "Do harm", "response": "I can't."}]}]))
    rows = load_vlguard(guard)
    assert rows == [] and dict(rows.dropped) == {"unsafe instructions without a compliant response to reject": 1}
    guard.write_text(json.dumps({"id": "x"}))
    with pytest.raises(ValueError, match=rf"{guard}: VLGuard data is a JSON list of records, got a dict"):
        load_vlguard(guard)


def test_a_missing_model_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"./missing does not exist: expected a model folder or a Hub repo id"):
        load_model_and_processor("./missing")


# --- converter, publisher and command line --------------------------------------------------------------------------


@pytest.fixture
def original(tmp_path):
    return shutil.copytree(original_fixtures_dir() / "checkpoints" / "base", tmp_path / "original")


def test_a_truncated_safetensors_file_is_named(original, tmp_path, capsys):
    data = (original / "model.safetensors").read_bytes()
    (original / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match=r"model.safetensors is not a readable safetensors file"):
        convert_original_checkpoint(original, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(original), str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and error.count("\n") == 1
    assert error.startswith("xgenmm convert: error: ") and "model.safetensors is not a readable safetensors" in error


def test_an_invalid_config_json_is_named(original, tmp_path, capsys):
    (original / "config.json").write_text("{ not json")
    with pytest.raises(ModelFolderError, match=r"config.json is not valid JSON"):
        convert_original_checkpoint(original, tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(original), str(tmp_path / "out")])
    assert exit_info.value.code == 1 and "config.json is not valid JSON" in capsys.readouterr().err


def test_a_bad_shard_size_is_refused_before_anything_is_written(original, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(original), str(tmp_path / "out"), "--max-shard-size", "5XB"])
    assert exit_info.value.code == 2  # argparse's usage error
    assert "expected a size such as 5GB, 500MB or 1000000 (bytes), got '5XB'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_local_folder_is_not_fetched_as_a_repo(tmp_path):
    with pytest.raises(OriginalCheckpointError, match=r"./missing does not exist: it is neither a local folder nor a"):
        convert_original_checkpoint("./missing", tmp_path / "out")


def test_an_original_base_checkpoint_loads_as_base_through_the_auto_classes():
    from transformers import AutoConfig

    folder = original_fixtures_dir() / "checkpoints" / "base"
    auto, direct = AutoConfig.from_pretrained(folder).to_dict(), XGenMMConfig.from_pretrained(folder).to_dict()
    assert auto["anyres"] is False
    assert {key: value for key, value in auto.items() if key != "_name_or_path"} == {
        key: value for key, value in direct.items() if key != "_name_or_path"
    }


@pytest.mark.slow
def test_hub_requests_that_never_get_an_answer_fail_in_bounded_time(silent_server, tmp_path):
    environment = {
        "HF_ENDPOINT": silent_server,
        "HF_HUB_ETAG_TIMEOUT": "1",
        "HF_HUB_DOWNLOAD_TIMEOUT": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "PATH": "/usr/bin:/bin",
    }
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "modeling_xgenmm.cli", "convert", "someone/model", str(tmp_path / "out")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1 and time.perf_counter() - started < 90
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line == (
        "xgenmm convert: error: someone/model is not a local folder, and fetching someone/model from the Hub failed: "
        "no answer within 3 s (timeout) (after 3 attempts)"
    )


def test_publishing_to_a_hub_that_never_answers_fails_in_bounded_time(silent_server, tmp_path, monkeypatch):
    import huggingface_hub

    model, processor = tiny_instruct_model(), tiny_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", silent_server)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_ETAG_TIMEOUT", 0.3)
    monkeypatch.setattr("modeling_xgenmm.checkpoint.network.time.sleep", lambda seconds: None)
    with pytest.raises(
        PublishError, match=r"creating the Hub repo me/tiny failed: no answer within 0.9 s \(timeout\)"
    ):
        publish(tmp_path / "model", "me/tiny", token="hf_fake")


def test_a_failed_hub_folder_leaves_nothing_behind(tmp_path, monkeypatch):
    model, processor = tiny_instruct_model(), tiny_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    monkeypatch.setattr(
        "modeling_xgenmm.hub.publish.link_or_copy", lambda *args: (_ for _ in ()).throw(OSError("full"))
    )
    with pytest.raises(OSError, match="full"):
        prepare_hub_folder(tmp_path / "model", tmp_path / "hub", "me/tiny")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_checkpoint_weights_load_and_match_after_all_these_checks(model, tmp_path):
    # The checks above cost nothing on good inputs: a saved model reloads with the same weights.
    model.save_pretrained(tmp_path)
    reloaded = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(reloaded[name], tensor) for name, tensor in model.state_dict().items())


def test_the_tiny_random_folder_still_loads():
    loaded, processor = load_model_and_processor(TINY_RANDOM)
    assert loaded.config.image_size == processor.image_processor.size["height"]
