"""Streamed training data: the web-corpus readers on files written here (broken and missing images, records that do
not parse, shards that do not open or break off: dropped, counted by reason and named), seeded shuffling, the real
`Trainer` on a stream with resume that neither repeats nor skips a row, runs over bad records that train to
`max_steps`, and the skip counts in the training logs."""

import json

import numpy as np
import pytest

from corpus_helpers import (
    bad_web_corpus,
    image_bytes,
    pixels,
    write_obelics_jsonl,
    write_obelics_parquet,
    write_tar_shard,
)
from modeling_xgenmm.train import SkipCounts, build_trainer, pretraining_stream, row_stream, train_stage
from modeling_xgenmm.train.loading import load_model_and_processor
from modeling_xgenmm.train.streaming import load_training_data
from network_helpers import SilentServer
from paths import REPO_ROOT, TINY_RANDOM
from training_helpers import StopAt, launch_two_processes, run_example, tiny_args, write_images, write_jsonl


EOC = "<|endofchunk|>"


@pytest.fixture
def corpus(tmp_path):
    """An OBELICS-layout parquet file and two webdataset shards, with what a correct reader yields and drops."""
    png = {seed: image_bytes(seed) for seed in range(8)}
    documents = [
        {"texts": [None, "Alpha text.", None, "Beta text."], "images": [png[0], None, png[1], None]},
        {"texts": ["Intro.", None, "After."], "images": [None, b"not an image", None]},
        # The second image is cut short: it does not decode; the document keeps the first.
        {"texts": ["Gamma.", None, None], "images": [None, png[2], png[3][: len(png[3]) // 2]]},
    ]
    write_obelics_parquet(tmp_path / "docs.parquet", documents)
    write_tar_shard(
        tmp_path / "shard-0.tar",
        [
            ("k0", {"png": png[4], "json": json.dumps({"caption": "Cap zero."}).encode()}),
            ("k1", {"jpg": image_bytes(5, format="JPEG"), "txt": b"Cap one."}),
        ],
    )
    write_tar_shard(
        tmp_path / "shard-1.tar",
        [
            ("k2", {"jpg": b"garbage", "txt": b"Broken."}),
            ("k3", {"txt": b"No image."}),
            ("k5", {"png": png[6], "json": json.dumps({"url": "https://a.example", "caption": "Cap five."}).encode()}),
        ],
    )  # fmt: skip
    expected = {
        f"<image>Alpha text.{EOC}<image>Beta text.{EOC}": [png[0], png[1]],
        f"Gamma.<image>{EOC}": [png[2]],
        f"<image>Cap zero.{EOC}": [png[4]],
        f"<image>Cap one.{EOC}": [image_bytes(5, format="JPEG")],
        f"<image>Cap five.{EOC}": [png[6]],
    }
    # d1's and k2's images, d2's second; k3 has none; d1, k2 and k3 are left without any image.
    dropped = {"undecodable_image": 3, "missing_image": 1, "no_image_left": 3}
    files = [tmp_path / "docs.parquet", tmp_path / "shard-0.tar", tmp_path / "shard-1.tar"]
    return files, expected, dropped


def test_pretraining_stream_reads_documents_and_caption_shards_and_counts_what_it_drops(corpus):
    files, expected, dropped = corpus
    counts = SkipCounts()
    rows = list(pretraining_stream(files, shuffle_buffer=0, counts=counts))

    assert sorted(row["text"] for row in rows) == sorted(expected)
    for row in rows:
        assert len(row["images"]) == len(expected[row["text"]])
        for image, source in zip(row["images"], expected[row["text"]], strict=True):
            np.testing.assert_array_equal(pixels(image), pixels(source))
    assert dict(counts) == dropped
    assert counts.as_logs() == {f"skipped_{reason}": count for reason, count in dropped.items()}


def test_documents_by_path_and_url_resolve_against_their_folder_and_urls_need_opting_in(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(image_bytes(1))
    documents = [
        {"texts": [None, "Local."], "images": ["img/a.png", None]},
        {"texts": [None, "Gone."], "images": ["img/missing.png", None]},
        {"texts": [None, "Web."], "images": ["https://example.invalid/x.png", None]},
        {"texts": [None, None], "images": ["img/a.png", None]},
    ]
    counts = SkipCounts()
    rows = list(pretraining_stream(write_obelics_jsonl(tmp_path / "docs.jsonl", documents), counts=counts))

    assert [row["text"] for row in rows] == [f"<image>Local.{EOC}"]
    np.testing.assert_array_equal(pixels(rows[0]["images"][0]), pixels(image_bytes(1)))
    # The text-less record is skipped before its images are read.
    assert dict(counts) == {"missing_image": 1, "url_image": 1, "no_image_left": 2, "no_text": 1}


def test_pretraining_stream_refuses_files_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match=r"read \.parquet, \.jsonl, \.json and \.tar files, got .*notes\.txt"):
        pretraining_stream([tmp_path / "notes.txt"])
    with pytest.raises(ValueError, match="no data files"):
        pretraining_stream([])
    write_obelics_jsonl(tmp_path / "rows.jsonl", [{"text": "<image>x", "images": ["a.png"]}])
    with pytest.raises(ValueError, match=r"parallel 'texts' and 'images' lists .*rows\.jsonl has the columns"):
        pretraining_stream([tmp_path / "rows.jsonl"])


def test_every_bad_record_and_shard_is_dropped_counted_and_named(tmp_path, caplog):
    files, texts, dropped = bad_web_corpus(tmp_path)
    counts = SkipCounts()
    rows = list(pretraining_stream(files, shuffle_buffer=0, counts=counts))

    assert sorted(row["text"] for row in rows) == sorted(texts)
    assert dict(counts) == dropped
    warned = "\n".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    for bad in (
        "caps-bad-records.tar, key 'b0'",
        "caps-bad-records.tar, key 'b1'",
        "caps-cut.tar",
        "not-a-tar.tar",
        "docs-cut.parquet",
        "docs-empty.parquet",
        "docs.jsonl, line 2",
        "docs.jsonl, line 3",
    ):
        assert f"{tmp_path}/{bad}" in warned, bad  # fmt: skip


def test_a_streamed_run_over_bad_records_trains_to_max_steps_and_reports_the_drops(tmp_path):
    files, texts, dropped = bad_web_corpus(tmp_path)
    steps = len(texts) // 2 + 1  # past the end of the stream: every file has been read once
    trainer = run_example(
        "train",
        ["--stage", "pretrain", "--model_name_or_path", str(TINY_RANDOM), "--data", *map(str, files),
         "--output_dir", str(tmp_path / "out"), "--max_steps", str(steps), "--per_device_train_batch_size", "2",
         "--shuffle_buffer", "0", "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true"],
    )  # fmt: skip
    assert trainer.state.global_step == steps
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert {reason: last[f"skipped_{reason}"] for reason in dropped} == dropped
    assert (tmp_path / "out" / "model.safetensors").is_file()


def bad_sft_rows(folder, url: str) -> list:
    """JSONL files of conversations with one bad line or row of each kind among good ones: (files, ids of the good
    rows)."""
    images = write_images(folder)
    good = numbered_sft_rows(images, 4)
    no_answer = {"id": "no-answer", "messages": [{"role": "user", "content": "<image>Hi?"}], "images": [images[0]]}
    caption = {"id": "a-caption", "image": images[0], "caption": "Not a conversation."}
    by_url = {**good[0], "id": "by-url", "images": [f"{url}/far.png"]}
    (folder / "b.jsonl").write_text("{oops\n[1, 2]\n" + json.dumps(no_answer) + "\n")
    files = [write_jsonl(folder / "a.jsonl", [good[0], caption, good[1], by_url]), folder / "b.jsonl"]
    files.append(write_jsonl(folder / "c.jsonl", good[2:]))
    return files, {row["id"] for row in good}


def test_a_streamed_sft_run_drops_bad_rows_and_never_fetches_a_url(tmp_path):
    server = SilentServer()
    files, good = bad_sft_rows(tmp_path, server.url)
    counts = SkipCounts()
    stream = row_stream(files, shuffle_buffer=0, counts=counts)
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    # Two steps of two rows: the four good rows, one pass over the files.
    args = tiny_args(tmp_path / "out", max_steps=2, per_device_train_batch_size=2, activation_checkpointing=False)
    trainer, _ = train_stage(model, processor, stream, "sft", args, skip_counts=counts)
    server.close()

    assert trainer.state.global_step == 2  # with --on_bad_sample raise, the default
    assert server.connections == 0
    # The first pass over the files: the two lines that are no rows, the row naming a URL, the caption pair and the
    # conversation without an answer (the rows the SFT stage cannot train on).
    assert {reason: counts[reason] for reason in ("bad_record", "url_image", "bad_row")} == {
        "bad_record": 2, "url_image": 1, "bad_row": 2
    }  # fmt: skip
    assert {row["id"] for row in row_stream(files, shuffle_buffer=0)} == good | {"a-caption", "no-answer"}


def test_a_stream_whose_every_row_is_dropped_stops_with_an_error(tmp_path):
    images = write_images(tmp_path)
    no_answer = {"messages": [{"role": "user", "content": "<image>Hi?"}], "images": [images[0]]}
    stream = row_stream(write_jsonl(tmp_path / "a.jsonl", [no_answer] * 3))
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    with pytest.raises(ValueError, match=r"the stream gave no rows to train on after step 0 of max_steps=2 \(records "
                       r"dropped: 3 bad_row"):  # fmt: skip
        train_stage(model, processor, stream, "sft", tiny_args(tmp_path / "out"))


def test_a_negative_shuffle_buffer_is_refused(tmp_path):
    rows = write_jsonl(tmp_path / "a.jsonl", numbered_sft_rows(write_images(tmp_path), 2))
    expected = r"shuffle_buffer is a number of records shuffled together, 0 \(file order\) or more; got -1"
    with pytest.raises(ValueError, match=expected):
        row_stream([rows], shuffle_buffer=-1)
    with pytest.raises(ValueError, match=expected):
        pretraining_stream(caption_shards(tmp_path, shards=1, per_shard=2), shuffle_buffer=-1)
    with pytest.raises(ValueError, match=expected):
        load_training_data([rows], shuffle_buffer=-1)


def caption_shards(folder, shards: int = 2, per_shard: int = 10) -> list:
    return [
        write_tar_shard(
            folder / f"caps-{shard}.tar",
            [(f"s{shard}k{index}", {"png": image_bytes(index), "txt": f"Caption {shard}-{index}.".encode()})
             for index in range(per_shard)],
        )
        for shard in range(shards)
    ]  # fmt: skip


def test_a_shard_that_breaks_off_is_read_up_to_the_break_and_the_next_one_continues(tmp_path):
    broken, whole = caption_shards(tmp_path, shards=2, per_shard=3)
    complete = broken.read_bytes()
    broken.write_bytes(complete[: len(complete) // 2])  # a truncated download

    texts = [row["text"] for row in pretraining_stream([broken, whole], shuffle_buffer=0)]
    assert texts[-3:] == [f"<image>Caption 1-{index}.{EOC}" for index in range(3)]
    assert 1 <= len(texts) - 3 < 3 and texts[0] == f"<image>Caption 0-0.{EOC}"


def test_the_shuffled_stream_is_fixed_by_its_seed_and_holds_every_record_once(tmp_path):
    shards = caption_shards(tmp_path)

    def order(seed):
        return [row["text"] for row in pretraining_stream(shards, seed=seed, shuffle_buffer=8)]

    in_file_order = [row["text"] for row in pretraining_stream(shards, shuffle_buffer=0)]
    assert in_file_order == [f"<image>Caption {shard}-{index}.{EOC}" for shard in range(2) for index in range(10)]
    assert order(0) == order(0)
    assert order(0) != order(1) != in_file_order
    assert sorted(order(1)) == sorted(in_file_order)


def numbered_sft_rows(images: list[str], count: int) -> list[dict]:
    """Conversations that differ in their text, so that a batch's token ids say which rows it holds."""
    return [
        {
            "id": f"row-{index}",
            "messages": [
                {"role": "user", "content": f"<image>Row {index}: what colour?"},
                {"role": "assistant", "content": f"Colour {index}."},
            ],
            "images": [images[index % len(images)]],
        }
        for index in range(count)
    ]


class RowsSeen:
    """Which rows the model is given, step by step, read back from the token ids of each forward."""

    def __init__(self, model, collator, rows: list[dict]):
        self.ids_of = {tuple(collator.encode(row)["input_ids"].tolist()): row["id"] for row in rows}
        self.seen = []
        model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"], strict=True):
            self.seen.append(self.ids_of[tuple(ids[mask.bool()].tolist())])


def test_streamed_training_resumes_where_it_stopped_without_repeating_or_skipping_a_row(tmp_path):
    images = write_images(tmp_path)
    rows = numbered_sft_rows(images, 16)
    files = [write_jsonl(tmp_path / "a.jsonl", rows[:8]), write_jsonl(tmp_path / "b.jsonl", rows[8:])]
    resolved = load_training_data(files)[0]

    def run(output_dir, resume=None, callbacks=None):
        model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
        args = tiny_args(
            output_dir, max_steps=6, per_device_train_batch_size=2, save_strategy="steps", save_steps=3,
            activation_checkpointing=False,
        )  # fmt: skip
        stream = row_stream(files, seed=3, shuffle_buffer=4)
        trainer = build_trainer(model, processor, stream, "sft", args, callbacks=callbacks)
        seen = RowsSeen(model, trainer.data_collator, resolved)
        trainer.train(resume_from_checkpoint=resume)
        return seen.seen, trainer

    uninterrupted, _ = run(tmp_path / "whole")
    first, _ = run(tmp_path / "parts", callbacks=[StopAt(3)])
    rest, trainer = run(tmp_path / "parts", resume=str(tmp_path / "parts" / "checkpoint-3"))

    assert len(uninterrupted) == 12 == len(set(uninterrupted))
    assert uninterrupted != [f"row-{index}" for index in range(12)]  # shuffled
    assert (first, rest) == (uninterrupted[:6], uninterrupted[6:])
    assert trainer.state.global_step == 6


def test_the_trainer_logs_what_the_stream_dropped(corpus, tmp_path):
    files, _, dropped = corpus
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    counts = SkipCounts()
    stream = pretraining_stream(files, shuffle_buffer=0, counts=counts)
    args = tiny_args(tmp_path / "out", max_steps=2, per_device_train_batch_size=2, activation_checkpointing=False)
    trainer = build_trainer(model, processor, stream, "pretrain", args, skip_counts=counts)
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logs] == [1, 2]
    assert all(entry["skipped_rows"] == 0 for entry in logs)
    # Documents and captions alternate: by the first step the broken document was read.
    assert logs[0]["skipped_undecodable_image"] >= 1
    for reason in dropped:
        values = [entry.get(f"skipped_{reason}", 0) for entry in logs]
        assert values == sorted(values) and values[-1] <= counts[reason]


def test_a_stream_needs_max_steps(tmp_path):
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    stream = row_stream(write_jsonl(tmp_path / "a.jsonl", numbered_sft_rows(write_images(tmp_path), 2)))
    with pytest.raises(ValueError, match="a streamed training set has no length: set max_steps"):
        build_trainer(model, processor, stream, "sft", tiny_args(tmp_path / "out", max_steps=-1))


def test_the_example_scripts_stream_web_corpus_shards(corpus, tmp_path):
    files, _, dropped = corpus
    output_dir = tmp_path / "out"
    trainer = run_example(
        "train",
        ["--stage", "pretrain", "--model_name_or_path", str(TINY_RANDOM),
         "--data", *map(str, files), "--output_dir", str(output_dir),
         "--max_steps", "2", "--per_device_train_batch_size", "2", "--shuffle_buffer", "4", "--logging_steps", "1",
         "--report_to", "none", "--disable_tqdm", "true"],
    )  # fmt: skip
    assert trainer.state.global_step == 2
    assert (output_dir / "model.safetensors").is_file()
    assert trainer.skip_counts is not None and set(trainer.skip_counts) <= set(dropped)


# Runs an example script's `main` on this rank, recording the rows each collator call is given, then writes them to
# `<output_dir>/rows-<rank>.json`.
RECORDING_LAUNCHER = """
import json, runpy, sys
from pathlib import Path
from modeling_xgenmm.train.collators import XGenMMDataCollator

seen = []
collate = XGenMMDataCollator.__call__
def recording(self, rows):
    seen.extend(row.get("id") or row["text"] for row in rows)
    return collate(self, rows)
XGenMMDataCollator.__call__ = recording

trainer = runpy.run_path(sys.argv[1])["main"](sys.argv[2:])
rank = trainer.accelerator.state.process_index
Path(trainer.args.output_dir, f"rows-{rank}.json").write_text(json.dumps(seen))
"""


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["four caption shards", "one JSONL file"])
def test_two_processes_read_disjoint_shares_of_a_stream(layout, tmp_path):
    if layout == "four caption shards":
        stage, files = "pretrain", caption_shards(tmp_path, shards=4, per_shard=6)
    else:
        rows = numbered_sft_rows(write_images(tmp_path), 24)
        stage, files = "sft", [write_jsonl(tmp_path / "rows.jsonl", rows)]
    launcher = tmp_path / "launch_recording.py"
    launcher.write_text(RECORDING_LAUNCHER)
    output_dir = tmp_path / "out"
    launch_two_processes(
        ["--multi_gpu", "--dynamo_backend", "no"],
        [launcher, REPO_ROOT / "examples" / "train.py", "--stage", stage,
         "--model_name_or_path", TINY_RANDOM, "--data", *files, "--streaming", "true", "--output_dir", output_dir,
         "--max_steps", "3", "--per_device_train_batch_size", "2", "--shuffle_buffer", "4", "--seed", "7",
         "--report_to", "none", "--disable_tqdm", "true"],
        cwd=tmp_path,
    )  # fmt: skip
    seen = [json.loads((output_dir / f"rows-{rank}.json").read_text()) for rank in (0, 1)]
    assert all(len(rows) >= 6 for rows in seen)  # 3 steps of 2 rows (and any batch read ahead)
    assert not set(seen[0]) & set(seen[1])
    if layout == "four caption shards":
        # Four shards for two processes: accelerate gives each process two whole shards.
        shards = [{text.split("Caption ")[1].split("-")[0] for text in rows} for rows in seen]
        assert [len(shard) for shard in shards] == [2, 2] and not shards[0] & shards[1]
