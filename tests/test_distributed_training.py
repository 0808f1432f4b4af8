"""Multi-process training: an example script launched unchanged with `accelerate launch` on 2 CPU processes (gloo)
trains data-parallel and ends with identical weights on both ranks."""

import json
import re

import pytest

from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.train.loading import load_model_and_processor
from paths import REPO_ROOT, TINY_RANDOM
from training_helpers import launch_two_processes, sft_rows, weights_sha256, write_images, write_jsonl


# Runs an example script's `main` on this rank, then prints the digest of the rank's final weights.
DIGEST_LAUNCHER = f"""
import runpy, sys
sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
from training_helpers import weights_sha256

trainer = runpy.run_path(sys.argv[1])["main"](sys.argv[2:])
state = trainer.accelerator.state
# One write per line: the processes share stdout.
print(f"rank {{state.process_index}} of {{state.num_processes}} ({{state.backend}}): weights sha256 "
      f"{{weights_sha256(trainer.model)}}\\n", end="", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("example", [["train.py", "--stage", "sft"], ["sft_trl.py"]], ids=["train", "sft_trl"])
def test_two_processes_train_data_parallel_and_end_with_identical_weights(example, tmp_path):
    write_images(tmp_path)
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows([f"img/{index}.png" for index in range(4)], 16))
    output_dir = tmp_path / "out"
    launcher = tmp_path / "launch_with_digest.py"
    launcher.write_text(DIGEST_LAUNCHER)
    completed = launch_two_processes(
        # `--multi_gpu` is the name of accelerate's torchrun launcher; without an accelerator the training
        # arguments put each process on the CPU, with gloo. (`--cpu` alone starts one process unless MPI is used.)
        ["--multi_gpu", "--dynamo_backend", "no"],
        [launcher, REPO_ROOT / "examples" / example[0], *example[1:],
         "--model_name_or_path", TINY_RANDOM, "--data", data, "--output_dir", output_dir,
         "--max_steps", "4", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--seed", "7",
         "--report_to", "none", "--disable_tqdm", "true"],
        cwd=tmp_path,
    )  # fmt: skip
    # The ranks share stdout, so other output may precede a report on its line.
    reports = re.findall(r"rank (\d) of (\d) \((\w+)\): weights sha256 ([0-9a-f]{64})\n", completed.stdout)
    assert sorted(rank for rank, _, _, _ in reports) == ["0", "1"], completed.stdout
    assert {(size, backend) for _, size, backend, _ in reports} == {("2", "gloo")}
    digests = {digest for _, _, _, digest in reports}
    assert len(digests) == 1

    # 4 steps of 2 rows on each of 2 ranks cover the 16 rows once: the ranks shared the data.
    assert json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())["epoch"] == 1.0
    saved = XGenMMForConditionalGeneration.from_pretrained(output_dir)
    assert weights_sha256(saved) == digests.pop() != weights_sha256(load_model_and_processor(TINY_RANDOM, seed=7)[0])
