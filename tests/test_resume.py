"""Training never loses work: a stage re-run into its output folder resumes from the last complete checkpoint (a run
killed while saving ends with the weights of an uninterrupted run), half-written checkpoints are skipped, and
`--start_over` moves the earlier checkpoints aside instead of letting the checkpoint rotation delete them."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import HfArgumentParser
from transformers.trainer_utils import get_last_checkpoint

from modeling_xgenmm.train import (
    XGenMMDPOConfig,
    XGenMMSFTConfig,
    XGenMMTrainingArguments,
    checkpoint_to_resume,
)
from modeling_xgenmm.train.resume import missing_checkpoint_files
from paths import REPO_ROOT, TINY_RANDOM
from training_helpers import run_example, sft_rows, weights_sha256, write_images, write_jsonl


# Runs an example script's `main`, killing the process (SIGKILL: no cleanup, as a preempted job) while checkpoint-3
# is being written: after its weights, in the middle of its optimizer file, before its `trainer_state.json`.
KILLED_DURING_SAVE_LAUNCHER = """
import os, runpy, signal, sys
import torch
from transformers import Trainer

torch.set_num_threads(1)
save = Trainer._save_optimizer_and_scheduler

def save_or_die(self, output_dir):
    if os.path.basename(output_dir) == "checkpoint-3":
        with open(os.path.join(output_dir, "optimizer.pt"), "wb") as half_written:
            half_written.write(b"half an optimizer")
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, output_dir)

Trainer._save_optimizer_and_scheduler = save_or_die
runpy.run_path(sys.argv[1])["main"](sys.argv[2:])
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume_data")
    write_images(folder)
    return write_jsonl(folder / "sft.jsonl", sft_rows([str(folder / f"img/{index}.png") for index in range(4)], 8))


def sft_argv(data, output_dir, *extra) -> list[str]:
    """`examples/train.py --stage sft` for 4 steps of 2 rows, a checkpoint every `--save_steps` (2 unless `extra`
    says)."""
    return [
        "--stage", "sft", "--model_name_or_path", str(TINY_RANDOM),
        "--data", str(data), "--output_dir", str(output_dir),
        "--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
        "--seed", "0", "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


def state_step(checkpoint) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished 4-step run with checkpoints 2 and 4, and its final weights' digest."""
    output_dir = tmp_path_factory.mktemp("finished") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests' runs (`conftest.single_torch_thread`), for the same floating-point sums
    trainer = run_example("train", sft_argv(data, output_dir))
    torch.set_num_threads(threads)
    return output_dir, weights_sha256(trainer.model)


# --- runs of the example script ------------------------------------------------------------------------------------


def test_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(data, finished_run, tmp_path, caplog):
    output_dir = tmp_path / "out"
    argv = sft_argv(data, output_dir, "--save_steps", "1")
    launcher = tmp_path / "launch_and_die.py"
    launcher.write_text(KILLED_DURING_SAVE_LAUNCHER)
    killed = subprocess.run(
        [sys.executable, str(launcher), str(REPO_ROOT / "examples" / "train.py"), *argv],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-4000:]
    half_written = output_dir / "checkpoint-3"
    assert (half_written / "model.safetensors").is_file() and not (half_written / "trainer_state.json").exists()
    assert missing_checkpoint_files(half_written) == ["trainer_state.json"]
    assert [missing_checkpoint_files(output_dir / f"checkpoint-{step}") for step in (1, 2)] == [[], []]
    assert get_last_checkpoint(output_dir) == str(half_written)  # what `resume_from_checkpoint=True` would load

    with caplog.at_level(logging.WARNING, logger="modeling_xgenmm.train.resume"):
        trainer = run_example("train", argv)  # the same command, not killed this time
    assert f"resuming from {output_dir / 'checkpoint-2'}," in caplog.text
    assert "checkpoint-3 (no trainer_state.json)" in caplog.text
    assert trainer.state.global_step == 4 and state_step(output_dir / "checkpoint-4") == 4
    assert missing_checkpoint_files(half_written) == []  # written again, completely
    # Same weights as an uninterrupted run (checkpoints do not change the training, so `finished_run` is one).
    assert weights_sha256(trainer.model) == finished_run[1]


def test_rerunning_a_finished_run_resumes_and_keeps_its_checkpoints(data, finished_run, tmp_path, caplog):
    output_dir = shutil.copytree(finished_run[0], tmp_path / "out")
    written = {step: (output_dir / f"checkpoint-{step}" / "trainer_state.json").stat().st_mtime_ns for step in (2, 4)}
    with caplog.at_level(logging.WARNING, logger="modeling_xgenmm.train.resume"):
        trainer = run_example("train", sft_argv(data, output_dir, "--save_total_limit", "1"))
    assert f"resuming from {output_dir / 'checkpoint-4'}," in caplog.text and "--start_over true" in caplog.text
    assert trainer.state.global_step == 4 and weights_sha256(trainer.model) == finished_run[1]
    # Nothing trained again, so nothing was saved or rotated away: both checkpoints are the first run's.
    assert {
        step: (output_dir / f"checkpoint-{step}" / "trainer_state.json").stat().st_mtime_ns for step in written
    } == (written)


def test_rerunning_a_finished_streamed_stage_trains_nothing_and_keeps_everything(data, tmp_path, caplog):
    # A stream has no epochs: resumed at its last step, the Trainer used to train one step more, and its rotation then
    # deleted the finished run's checkpoints (with a constant schedule the extra step also changed the final model).
    folder = tmp_path / "out"
    argv = sft_argv(data, folder, "--streaming", "true", "--max_steps", "3", "--save_steps", "1",
                    "--save_total_limit", "2", "--lr_scheduler_type", "constant")  # fmt: skip
    run_example("train", argv)
    final = load_file(folder / "model.safetensors")

    def checkpoint_files() -> dict:
        return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.glob("checkpoint-*/*")}

    written = checkpoint_files()
    assert sorted(path.name for path in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]

    with caplog.at_level(logging.WARNING, logger="modeling_xgenmm.train.resume"):
        again = run_example("train", argv)
    assert f"{folder / 'checkpoint-3'} already finished this stage (step 3 of 3): nothing to train" in caplog.text
    assert again.state.global_step == 3
    assert checkpoint_files() == written  # nothing saved, nothing rotated away
    # The final model, saved again by the script, is the finished one.
    again_final = load_file(folder / "model.safetensors")
    assert final.keys() == again_final.keys()
    assert all(torch.equal(final[name], again_final[name]) for name in final)


def test_start_over_moves_the_earlier_checkpoints_aside_and_starts_at_step_0(data, finished_run, tmp_path, caplog):
    output_dir = shutil.copytree(finished_run[0], tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="modeling_xgenmm.train.resume"):
        trainer = run_example("train", sft_argv(data, output_dir, "--save_total_limit", "1", "--start_over", "true"))
    [previous] = output_dir.glob("previous-run-*")
    assert f"moved 2 earlier checkpoints of {output_dir} into {previous}" in caplog.text
    assert "resuming" not in caplog.text
    assert sorted(path.name for path in previous.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert [state_step(previous / f"checkpoint-{step}") for step in (2, 4)] == [2, 4]
    # With nothing left to resume from, the new run trained from step 0, wrote its own checkpoints (the rotation kept
    # 1 of them, and left the moved ones alone) and ended where the first run did.
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-4"]
    assert trainer.state.global_step == 4 and weights_sha256(trainer.model) == finished_run[1]


# --- which checkpoint, and errors ---------------------------------------------------------------------------------


def fake_checkpoint(folder, *names, state="{}"):
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def args(output_dir, **overrides) -> XGenMMTrainingArguments:
    return XGenMMTrainingArguments(output_dir=str(output_dir), report_to="none", **overrides)


def test_a_checkpoint_is_complete_with_its_state_weights_or_adapters_and_optimizer(tmp_path):
    assert missing_checkpoint_files(fake_checkpoint(tmp_path / "full", "model.safetensors", "optimizer.pt")) == []
    assert (
        missing_checkpoint_files(fake_checkpoint(tmp_path / "lora", "adapter_model.safetensors", "optimizer.pt")) == []
    )
    assert (
        missing_checkpoint_files(fake_checkpoint(tmp_path / "model-only", "model.safetensors"), optimizer=False) == []
    )
    assert missing_checkpoint_files(fake_checkpoint(tmp_path / "killed", "model.safetensors", state=None)) == [
        "optimizer.pt",
        "trainer_state.json",
    ]
    cut = fake_checkpoint(tmp_path / "cut", "adapter_model.safetensors", "optimizer.pt", state='{"global_step": ')
    assert missing_checkpoint_files(cut) == ["trainer_state.json"]
    assert missing_checkpoint_files(fake_checkpoint(tmp_path / "no-weights", "optimizer.pt")) == [
        "model weights (model.safetensors, or adapter_model.safetensors with PEFT)"
    ]


def test_default_is_the_last_complete_checkpoint_by_step(tmp_path, caplog):
    assert checkpoint_to_resume(args(tmp_path / "absent")) is None
    for step in (2, 10):
        fake_checkpoint(tmp_path / f"checkpoint-{step}", "model.safetensors", "optimizer.pt")
    fake_checkpoint(tmp_path / "checkpoint-11", "model.safetensors", state=None)
    with caplog.at_level(logging.WARNING, logger="modeling_xgenmm.train.resume"):
        assert checkpoint_to_resume(args(tmp_path)) == str(tmp_path / "checkpoint-10")  # 10 after 2, not "10" < "2"
    assert "checkpoint-11 (no optimizer.pt, trainer_state.json)" in caplog.text
    for latest in ("latest", "true", "True"):
        assert checkpoint_to_resume(args(tmp_path, resume_from_checkpoint=latest)) == str(tmp_path / "checkpoint-10")
    explicit = str(tmp_path / "checkpoint-2")
    assert checkpoint_to_resume(args(tmp_path, resume_from_checkpoint=explicit)) == explicit


def test_latest_without_a_complete_checkpoint_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(ValueError, match=rf"resume_from_checkpoint=latest: {tmp_path} holds no complete checkpoint"):
        checkpoint_to_resume(args(tmp_path, resume_from_checkpoint="latest"))
    fake_checkpoint(tmp_path / "checkpoint-3", "model.safetensors", "optimizer.pt", state=None)
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        checkpoint_to_resume(args(tmp_path, resume_from_checkpoint="latest"))


def test_resuming_from_an_incomplete_checkpoint_is_an_error_naming_what_is_missing(data, tmp_path):
    half_written = fake_checkpoint(tmp_path / "checkpoint-3", "model.safetensors", "optimizer.pt", state=None)
    with pytest.raises(ValueError, match=r"checkpoint-3: it is not a complete checkpoint, missing trainer_state.json"):
        run_example("train", sft_argv(data, tmp_path / "out", "--resume_from_checkpoint", str(half_written)))
    with pytest.raises(ValueError, match="start_over and resume_from_checkpoint='latest' contradict each other"):
        checkpoint_to_resume(args(tmp_path, resume_from_checkpoint="latest", start_over=True))
    with pytest.raises(ValueError, match="--start_over true"):
        checkpoint_to_resume(args(tmp_path, resume_from_checkpoint="false"))


def test_start_over_is_a_flag_of_every_stage_and_moves_nothing_from_an_empty_folder(tmp_path):
    for config_class in (XGenMMTrainingArguments, XGenMMSFTConfig, XGenMMDPOConfig):
        [config] = HfArgumentParser(config_class).parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--report_to", "none", "--start_over", "true"]
        )
        assert config.start_over is True
    assert checkpoint_to_resume(config) is None and list(tmp_path.iterdir()) == []
