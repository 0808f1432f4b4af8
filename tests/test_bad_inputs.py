"""The project's catalogue of bad inputs, faults and misuses: each with the exact error it must raise (naming what was
wrong and what was expected) or the exact result it must give. Other test modules test the same classes in depth;
this one keeps the list in one place, by area."""

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

import xgenmm_processing.image_processing_xgenmm as image_processing
from corpus_helpers import (
    image_bytes,
    write_obelics_jsonl,
    write_obelics_parquet,
    write_parquet_cut_short,
    write_tar_cut_in_a_member,
    write_tar_shard,
)
from hub_helpers import tiny_instruct_model, tiny_processor
from modeling_xgenmm import XGenMMConfig
from modeling_xgenmm.checkpoint.convert import convert_original_checkpoint
from modeling_xgenmm.checkpoint.folders import ModelFolderError
from modeling_xgenmm.checkpoint.key_map import OriginalCheckpointError
from modeling_xgenmm.cli import main
from modeling_xgenmm.hub.publish import PublishError, prepare_hub_folder, publish
from modeling_xgenmm.train import SkipCounts, pretraining_stream, row_stream, train_stage
from modeling_xgenmm.train.collators import BadSampleError, XGenMMDataCollator, XGenMMPreferenceCollator
from modeling_xgenmm.train.loading import load_model_and_processor
from modeling_xgenmm.train.preference_data import load_vlfeedback, load_vlguard
from modeling_xgenmm.train.streaming import load_training_data
from modeling_xgenmm.train.validation import validate_rows
from network_helpers import SilentServer, StatusServer
from paths import TINY_RANDOM, original_fixtures_dir
from processing_helpers import synthetic_image
from processing_helpers import tiny_processor as tiny_image_processor
from training_helpers import StopAt, run_example, tiny_args, write_jsonl


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def model():
    return tiny_instruct_model()


@pytest.fixture
def silent():
    """A local server that accepts connections and never answers, counting them."""
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def silent_server(silent):
    """The URL of `silent`."""
    return silent.url


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
    kept = {"id": "kept", "prompt": "Q?", "image": "a.png", "completions": [
        {"annotations": {"Helpfulness": {"Rating": "5"}}, "response": "A"},
        {"annotations": {"Helpfulness": {"Rating": "1"}}, "response": "B"}]}  # fmt: skip
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(map(json.dumps, [*records, kept])))
    rows = load_vlfeedback(good)
    assert [row["id"] for row in rows] == ["kept"] and dict(rows.dropped) == {
        "records whose best and worst responses rate the same": 1,
        "records with fewer than two rated, non-empty responses": 1,
    }
    guard = tmp_path / "train.json"
    unsafe = {"id": "u", "image": "a.png", "safe": False}
    guard.write_text(json.dumps([{**unsafe, "instr-resp": [{"instruction": "Do harm", "response": "I can't."}]}]))
    with pytest.raises(ValueError, match=rf"{guard}: VLGuard: none of the 1 records gave a preference row \(1 unsafe "
                       r"instructions without a compliant response to reject\); .*compliant response"):  # fmt: skip
        load_vlguard(guard)
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
        "no answer within 1 s (timeout)"
    )


def test_publishing_to_a_hub_that_never_answers_waits_one_timeout_not_one_per_attempt(silent, tmp_path, monkeypatch):
    import huggingface_hub

    model, processor = tiny_instruct_model(), tiny_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", silent.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_ETAG_TIMEOUT", 0.3)
    monkeypatch.setattr("modeling_xgenmm.checkpoint.network.time.sleep", lambda seconds: None)
    with pytest.raises(
        PublishError, match=r"creating the Hub repo me/tiny failed: no answer within 0.3 s \(timeout\)$"
    ):
        publish(tmp_path / "model", "me/tiny", token="hf_fake")
    # A server that took the request and stayed silent is not asked again (it was, 3 times, each for 3 timeouts).
    assert silent.connections == 1


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


# --- streamed corpora and long runs ---------------------------------------------------------------------------------


def good_captions(folder) -> Path:
    return write_tar_shard(
        folder / "good.tar", [(f"g{index}", {"png": image_bytes(index), "txt": b"Good."}) for index in range(2)]
    )


def bad_caption_json(folder):
    return [write_tar_shard(folder / "bad.tar", [("b", {"png": image_bytes(5), "json": b"{not json"})])]


def bad_caption_text(folder):
    return [write_tar_shard(folder / "bad.tar", [("b", {"png": image_bytes(5), "txt": b"\xff\xfe not utf-8"})])]


def parquet_cut_short(folder):
    good = write_obelics_parquet(folder / "a.parquet", [{"texts": ["Good."], "images": [None]}] * 2)
    return [good, write_parquet_cut_short(folder / "b.parquet", [{"texts": ["Lost."], "images": [None]}] * 50)]


def empty_parquet_first(folder):
    (folder / "a.parquet").write_bytes(b"")
    return [
        folder / "a.parquet",
        write_obelics_parquet(folder / "b.parquet", [{"texts": ["Good."], "images": [None]}]),
    ]


def tar_cut_in_a_member(folder):
    samples = [("c0", {"png": image_bytes(6), "txt": b"Good."}), ("c1", {"png": image_bytes(7), "txt": b"Cut."})]
    return [write_tar_cut_in_a_member(folder / "cut.tar", samples)]


def not_a_tar(folder):
    (folder / "bad.tar").write_bytes(b"no tar archive " * 50)
    return [folder / "bad.tar"]


def other_image_types(folder):
    samples = [(kind, {kind: image_bytes(1, format=kind.upper()), "txt": b"Good."}) for kind in ("bmp", "gif", "tiff")]
    return [write_tar_shard(folder / "kinds.tar", samples)]


def jsonl_line_not_json(folder):
    (folder / "docs.jsonl").write_text(json.dumps({"texts": ["Good."], "images": [None]}) + "\n{oops\n")
    return [folder / "docs.jsonl"]


# (name, the files written next to a good shard, the records read from them, the drops counted by reason)
STREAM_CASES = [
    ("caption .json that is not JSON", bad_caption_json, 0, {"bad_record": 1}),
    ("caption .txt that is not UTF-8", bad_caption_text, 0, {"bad_record": 1}),
    ("parquet shard cut short", parquet_cut_short, 2, {"unreadable_shard": 1}),
    ("empty parquet shard at the start", empty_parquet_first, 1, {"unreadable_shard": 1}),
    ("tar shard broken off inside a member", tar_cut_in_a_member, 1, {"unreadable_shard": 1}),
    ("shard that is not a tar file", not_a_tar, 0, {"unreadable_shard": 1}),
    ("caption images as .bmp, .gif, .tiff", other_image_types, 3, {}),
    ("JSONL document line that is not JSON", jsonl_line_not_json, 1, {"bad_record": 1}),
]


@pytest.mark.parametrize("name, write, read, dropped", STREAM_CASES, ids=[case[0] for case in STREAM_CASES])
def test_a_bad_record_or_shard_in_a_stream_is_dropped_counted_and_named(name, write, read, dropped, tmp_path, caplog):
    bad = write(tmp_path)
    counts = SkipCounts()
    rows = list(pretraining_stream([good_captions(tmp_path), *bad], shuffle_buffer=0, counts=counts))
    assert len(rows) == 2 + read and all("Good." in row["text"] for row in rows)
    assert dict(counts) == dropped
    for reason in dropped:
        assert f"skipped ({reason}): {tmp_path}/" in caplog.text


def test_a_stream_of_parquet_files_none_of_which_opens_fails_naming_them(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"none of the interleaved document files can be read: {tmp_path}/a.parquet"):
        pretraining_stream([tmp_path / "a.parquet"])


def conversation(answer: str | None = "Red.", image: str = "a.png", **extra) -> dict:
    turns = [{"role": "user", "content": "<image>What color?"}]
    turns += [{"role": "assistant", "content": answer}] if answer is not None else []
    return {"messages": turns, "images": [image], **extra}


def test_a_streamed_sft_row_without_an_answer_is_dropped_and_the_run_goes_on(tmp_path):
    image_of().save(tmp_path / "a.png")
    rows = [conversation(id="one"), conversation(None, id="no-answer"), conversation(id="two")]
    counts = SkipCounts()
    stream = row_stream(write_jsonl(tmp_path / "rows.jsonl", rows), shuffle_buffer=0, counts=counts)
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    args = tiny_args(tmp_path / "out", max_steps=1, per_device_train_batch_size=2, activation_checkpointing=False)
    trainer, _ = train_stage(model, processor, stream, "sft", args, skip_counts=counts)  # on_bad_sample="raise"
    assert trainer.state.global_step == 1 and dict(counts) == {"bad_row": 1}


def test_rerunning_a_finished_streamed_stage_is_a_no_op_that_says_so(tmp_path, caplog):
    image_of().save(tmp_path / "a.png")
    data = write_jsonl(tmp_path / "rows.jsonl", [conversation(id=str(index)) for index in range(4)])

    def run():
        model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
        args = tiny_args(tmp_path / "out", max_steps=3, per_device_train_batch_size=2, save_strategy="steps",
                         save_steps=1, save_total_limit=1, lr_scheduler_type="constant",
                         activation_checkpointing=False)  # fmt: skip
        return train_stage(model, processor, row_stream(data, shuffle_buffer=0), "sft", args)[0]

    finished = run()
    checkpoint = tmp_path / "out" / "checkpoint-3"
    saved = {path.name: path.stat().st_mtime_ns for path in checkpoint.iterdir()}
    again = run()
    assert f"{checkpoint} already finished this stage (step 3 of 3): nothing to train" in caplog.text
    assert sorted(path.name for path in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-3"]
    assert {path.name: path.stat().st_mtime_ns for path in checkpoint.iterdir()} == saved
    assert again.state.global_step == 3
    assert all(
        torch.equal(a, b) for a, b in zip(finished.model.state_dict().values(), again.model.state_dict().values())
    )


def test_a_negative_shuffle_buffer_is_refused(tmp_path):
    image_of().save(tmp_path / "a.png")
    data = write_jsonl(tmp_path / "rows.jsonl", [conversation()])
    argv = ["--stage", "sft", "--model_name_or_path", str(TINY_RANDOM), "--data", str(data), "--streaming", "true",
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--shuffle_buffer", "-1"]  # fmt: skip
    with pytest.raises(ValueError, match=r"shuffle_buffer is a number of records shuffled together, 0 \(file order\) "
                       r"or more; got -1"):  # fmt: skip
        run_example("train", argv)
    assert not (tmp_path / "out").exists()


def test_obelics_documents_whose_texts_are_strings_are_refused_naming_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"texts": ["Spelled out."], "images": [[None]]}), tmp_path / "docs.parquet")
    with pytest.raises(ValueError, match=rf"{tmp_path}/docs.parquet: 'texts' is string; the OBELICS layout has one "
                       r"list per document in each: 'texts' of strings"):  # fmt: skip
        pretraining_stream([tmp_path / "docs.parquet"])
    write_obelics_jsonl(tmp_path / "docs.jsonl", [{"texts": "Spelled out.", "images": []}])
    with pytest.raises(ValueError, match=rf"{tmp_path}/docs.jsonl: 'texts' is a str; the OBELICS layout"):
        pretraining_stream([tmp_path / "docs.jsonl"])


def test_image_urls_in_training_rows_are_never_fetched_unless_allowed(silent, tmp_path):
    image_of().save(tmp_path / "a.png")
    data = write_jsonl(tmp_path / "rows.jsonl", [conversation(id="here"), conversation(image=f"{silent.url}/x.png")])
    counts = SkipCounts()
    assert [row["id"] for row in row_stream(data, shuffle_buffer=0, counts=counts)] == ["here"]
    assert dict(counts) == {"url_image": 1} and silent.connections == 0
    with pytest.raises(ValueError, match=rf"1 training rows name images by URL \(row 1: {silent.url}/x.png\); pass "
                       r"--allow_image_urls true"):  # fmt: skip
        load_training_data([data])  # read into memory


def test_a_streamed_run_resumed_on_other_files_says_so(tmp_path, caplog):
    image_of().save(tmp_path / "a.png")
    files = [write_jsonl(tmp_path / f"{part}.jsonl", [conversation(id=f"{part}{index}") for index in range(4)])
             for part in "abc"]  # fmt: skip

    def run(data_files, callbacks=None):
        model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
        args = tiny_args(tmp_path / "out", max_steps=4, per_device_train_batch_size=2, save_strategy="steps",
                         save_steps=2, activation_checkpointing=False)  # fmt: skip
        stream = row_stream(data_files, shuffle_buffer=0)
        return train_stage(model, processor, stream, "sft", args, callbacks=callbacks)[0]

    run(files[:2], callbacks=[StopAt(2)])
    recorded = json.loads((tmp_path / "out" / "checkpoint-2" / "data_files.json").read_text())
    assert recorded == {str(file): file.stat().st_size for file in files[:2]}
    trainer = run(files)
    assert (
        f"resuming from {tmp_path / 'out' / 'checkpoint-2'}, whose run streamed other data files (added: {files[2]}):"
        in caplog.text
    )
    assert "--ignore_data_skip true" in caplog.text and trainer.state.global_step == 4


def test_generate_on_a_text_prompt_with_image_inputs_named_none_ignores_them(model, processor):
    inputs = processor(text="Hello there", return_tensors="pt")
    plain = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    with_none = model.generate(**inputs, pixel_values=None, image_sizes=torch.tensor([[30, 40]]), max_new_tokens=4,
                               do_sample=False)  # fmt: skip
    assert torch.equal(plain, with_none)


def test_every_row_bad_under_skip_says_there_is_nothing_to_train_on(processor, tmp_path):
    rows = [{"id": "a", "messages": [{"role": "user", "content": "Q?"}]}, {"id": "b", "text": "  "}]
    with pytest.raises(BadSampleError, match=r"all 2 training rows are bad, found before training, so there is "
                       r"nothing to train on: row 0 \(id 'a'\): the conversation has no assistant turn"):  # fmt: skip
        validate_rows(rows, XGenMMDataCollator(processor, on_bad_sample="skip"))


def test_a_vlfeedback_file_whose_every_record_is_dropped_says_why(tmp_path):
    lower_case = {"helpfulness": {"Rating": "5"}}  # the aspects are 'Helpfulness', ...
    completions = [{"annotations": lower_case, "response": "A"}, {"annotations": lower_case, "response": "B"}]
    record = {"id": "a", "prompt": "Q?", "image": "a.png", "completions": completions}
    (tmp_path / "vlfeedback.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"VLFeedback: none of the 1 records gave a preference row \(1 records with "
                       r"fewer than two rated, non-empty responses\); a record needs two responses rated in their "
                       r"annotations' 'Helpfulness'"):  # fmt: skip
        load_vlfeedback(tmp_path / "vlfeedback.jsonl")


# --- evaluation -----------------------------------------------------------------------------------------------------


def test_eval_refuses_model_args_that_name_another_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path), "--tasks", "xgenmm_toy_world", "--model-args", "pretrained=/other/model"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and error.count("\n") == 1
    assert "--model-args sets 'pretrained=/other/model', which the MODEL argument sets: give it there only" in error
    assert not (tmp_path / "README.md").exists()


def test_eval_failures_say_what_lmms_eval_said(tmp_path, capsys):
    tiny_instruct_model().save_pretrained(tmp_path / "model")
    tiny_processor().save_pretrained(tmp_path / "model")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path / "model"), "--tasks", "no_such_task", "--output-path", str(tmp_path / "eval")])
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 1
    assert last_line.startswith(
        f"xgenmm eval: error: RuntimeError: lmms-eval failed, writing no results under {tmp_path / 'eval'}: "
        "ValueError: Tasks not found: no_such_task."
    )


# --- image URLs and per-call grids ----------------------------------------------------------------------------------


def test_an_image_url_answering_404_is_requested_once():
    server = StatusServer(404)
    try:
        with pytest.raises(ValueError, match=r"could not be fetched: the server answered HTTP 404"):
            image_processing.fetch_url(f"{server.url}/missing.png", timeout=2, attempts=3)
    finally:
        server.close()
    assert server.requests == ["/missing.png"]


def test_per_call_grids_that_are_not_multiples_of_the_view_size_are_refused():
    for backend in ("torchvision", "pil"):
        with pytest.raises(
            ValueError,
            match=r"image_grid_pinpoints must be \(height, width\) pairs that are positive "
            r"multiples of the view size \(size: height \d+, width \d+\); got \[\[50, 70\]\]",
        ):
            tiny_image_processor(backend)(images=image_of(), image_grid_pinpoints=[[50, 70]])
