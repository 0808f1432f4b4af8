# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Sharded training: the accelerate configs in `examples/accelerate/` are valid for accelerate's own parsers; FSDP2's
auto-wrap puts every transformer layer (language model, vision tower, perceiver) in its own unit; `examples/train.py
--stage sft`, launched unchanged on 2 CPU processes with `fsdp2.yaml`, trains with sharded parameters along the same
loss curve as with `ddp.yaml` and saves a folder that loads with and without the package.

On CPUs accelerate would silently run the FSDP config as plain data parallel (it enables FSDP for GPU-like process
groups only); the launcher lets its FSDP2 path run on gloo (`benchmarks.sharded_memory.allow_fsdp_on_cpu`) and each
rank reports that its parameters are sharded DTensors."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from isolation import run_isolated
from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.train.loading import load_model_and_processor
from paths import REPO_ROOT, TINY_RANDOM
from training_helpers import free_port, launch_two_processes, sft_rows, write_images, write_jsonl


CONFIGS = REPO_ROOT / "examples" / "accelerate"
LAYER_CLASSES = {"Phi3DecoderLayer", "SiglipEncoderLayer", "XGenMMPerceiverLayer"}

# Runs `examples/train.py`'s `main` on this rank with accelerate's FSDP path allowed on CPUs, then reports how the rank
# trained: its distributed type and whether its parameters are sharded (DTensors).
LAUNCHER = """
import runpy, sys
sys.path.insert(0, {repo_root!r})
from benchmarks.sharded_memory import allow_fsdp_on_cpu
from torch.distributed.tensor import DTensor

allow_fsdp_on_cpu()
trainer = runpy.run_path(sys.argv[1])["main"](sys.argv[2:])
state = trainer.accelerator.state
sharded = all(isinstance(parameter, DTensor) for parameter in trainer.model.parameters())
print(f"rank {{state.process_index}}: {{state.distributed_type}} sharded={{sharded}}\\n", end="", flush=True)
"""


def launch_arguments(config_file: str) -> object:
    """accelerate launch's arguments for `--config_file examples/accelerate/<config_file>`, after its own checks and
    with the DeepSpeed fields `launch_command` adds."""
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config_file), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    return args


def test_every_config_loads_with_accelerate():
    expected = {
        "fsdp2.yaml": "FSDP",
        "ddp.yaml": "MULTI_GPU",
        "deepspeed_zero2.yaml": "DEEPSPEED",
        "deepspeed_zero3.yaml": "DEEPSPEED",
    }
    assert {path.name for path in CONFIGS.glob("*.yaml")} == set(expected)
    for name, distributed_type in expected.items():
        config = load_config_from_file(str(CONFIGS / name))
        assert str(config.distributed_type).split(".")[-1] == distributed_type, name
        assert config.num_machines == 1 and config.mixed_precision == "bf16", name


def test_fsdp2_config_gives_a_full_shard_plugin_that_saves_full_weights(monkeypatch):
    env = prepare_multi_gpu_env(launch_arguments("fsdp2.yaml"))
    assert env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # full shard
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)  # Trainer.save_model writes a from_pretrained folder
    assert plugin.transformer_cls_names_to_wrap is None  # taken from the model's `_no_split_modules`
    # The package's policy checkpoints activations; FSDP's own on top would make the Trainer refuse to start.
    assert plugin.activation_checkpointing is False


def test_fsdp2_auto_wrap_gives_every_transformer_layer_its_own_unit(monkeypatch):
    model, _ = load_model_and_processor(TINY_RANDOM, seed=0)
    built = {type(module).__name__ for module in model.modules()}
    # transformers gathers the sub-models' lists, with classes they declare but this model does not build.
    assert LAYER_CLASSES <= set(model._no_split_modules) <= built
    monkeypatch.setenv("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(fsdp_version=2), model)
    wrapped = [module for module in model.modules() if policy(module)]
    layers = [module for module in model.modules() if type(module).__name__ in LAYER_CLASSES]
    assert {type(module).__name__ for module in wrapped} >= LAYER_CLASSES
    assert all(policy(layer) for layer in layers) and len(layers) == 2 + 2 + 2  # vision, perceiver, language


def test_deepspeed_configs_give_zero_plugins(monkeypatch):
    pytest.importorskip("deepspeed")
    from accelerate.utils import DeepSpeedPlugin

    for name, stage in (("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)):
        _, env = prepare_deepspeed_cmd_env(launch_arguments(name))
        with monkeypatch.context() as patch:
            for key, value in env.items():
                if key.startswith("ACCELERATE_"):
                    patch.setenv(key, value)
            plugin = DeepSpeedPlugin()
        config = plugin.deepspeed_config
        assert config["zero_optimization"]["stage"] == stage, name
        # Batch sizes, accumulation and clipping follow the training arguments.
        assert config["train_micro_batch_size_per_gpu"] == "auto" and config["gradient_accumulation_steps"] == "auto"
        assert config["gradient_clipping"] == "auto"
        if stage == 3:
            assert plugin.zero3_init_flag is True
            assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def train_two_processes(config_file: str, data, output_dir, launcher) -> subprocess.CompletedProcess:
    """`examples/train.py --stage sft` through `launcher` on 2 CPU processes (gloo) with
    `examples/accelerate/<config_file>`."""
    return launch_two_processes(
        ["--config_file", CONFIGS / config_file],
        [launcher, REPO_ROOT / "examples" / "train.py", "--stage", "sft",
         "--model_name_or_path", TINY_RANDOM, "--data", data, "--output_dir", output_dir,
         "--max_steps", "4", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--seed", "7",
         "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true"],
        cwd=output_dir.parent,
        timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The output folders of the same 4 steps with `ddp.yaml` and with `fsdp2.yaml`, and the ranks' reports."""
    root = tmp_path_factory.mktemp("sharded")
    write_images(root)
    data = write_jsonl(root / "sft.jsonl", sft_rows([f"img/{index}.png" for index in range(4)], 16))
    launcher = root / "launch.py"
    launcher.write_text(LAUNCHER.format(repo_root=str(REPO_ROOT)))
    folders, reports = {}, {}
    for name in ("ddp", "fsdp2"):
        folders[name] = root / name
        completed = train_two_processes(f"{name}.yaml", data, folders[name], launcher)
        reports[name] = sorted(re.findall(r"rank (\d): DistributedType\.(\w+) sharded=(\w+)\n", completed.stdout))
    return folders, reports


def log_history(folder) -> list[dict]:
    return json.loads((folder / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_fsdp2_shards_the_model_and_follows_the_ddp_loss_curve(runs):
    folders, reports = runs
    assert reports["fsdp2"] == [("0", "FSDP", "True"), ("1", "FSDP", "True")]
    assert reports["ddp"] == [("0", "MULTI_CPU", "False"), ("1", "MULTI_CPU", "False")]
    steps = {name: [entry for entry in log_history(folder) if "loss" in entry] for name, folder in folders.items()}
    assert [entry["step"] for entry in steps["fsdp2"]] == [entry["step"] for entry in steps["ddp"]] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm"):
        fsdp2, ddp = ([entry[key] for entry in steps[name]] for name in ("fsdp2", "ddp"))
        assert fsdp2 == pytest.approx(ddp, rel=1e-5), key
    assert steps["fsdp2"][-1]["loss"] < steps["fsdp2"][0]["loss"]


@pytest.mark.slow
def test_fsdp2_saves_a_full_model_that_from_pretrained_loads(runs):
    folders, _ = runs
    fsdp2 = XGenMMForConditionalGeneration.from_pretrained(folders["fsdp2"]).state_dict()
    ddp = XGenMMForConditionalGeneration.from_pretrained(folders["ddp"]).state_dict()
    initial = load_model_and_processor(TINY_RANDOM, seed=7)[0].state_dict()
    assert fsdp2.keys() == ddp.keys()
    for key in fsdp2:
        torch.testing.assert_close(fsdp2[key], ddp[key], rtol=1e-4, atol=1e-6, msg=key)
    assert not torch.equal(fsdp2["lm_head.weight"], initial["lm_head.weight"])


@pytest.mark.slow
def test_fsdp2_saved_folder_loads_with_trust_remote_code_without_the_package(runs, tmp_path):
    folder = runs[0]["fsdp2"]
    assert {path.name for path in folder.glob("*.py")} == {
        "compat_xgenmm.py",
        "configuration_xgenmm.py",
        "modeling_xgenmm.py",
        "processing_xgenmm.py",
        "image_processing_xgenmm.py",
        "tokenization_xgenmm.py",
    }  # the package's code, not torch's FSDP modules
    result = run_isolated(
        f"""
        import json, torch
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code=True)
        torch.save(model.state_dict(), "state.pt")
        print(json.dumps({{"module": type(model).__module__, "class": type(model).__name__}}))
        """,
        cwd=tmp_path,
    )
    assert result["module"].startswith("transformers_modules.")
    assert result["class"] == "XGenMMForConditionalGeneration"
    remote = torch.load(tmp_path / "state.pt")
    local = XGenMMForConditionalGeneration.from_pretrained(folder).state_dict()
    assert remote.keys() == local.keys() and all(torch.equal(remote[key], local[key]) for key in local)


# One process, DeepSpeed's CPU accelerator on gloo: the model is built partitioned (ZeRO-3 `zero.Init`, through
# transformers' `HfDeepSpeedConfig`), trains one step, and its gathered 16-bit state dict is saved with
# `save_pretrained`, as `Trainer.save_model` does with `zero3_save_16bit_model`.
ZERO3_SCRIPT = """
import json, os, sys
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
import deepspeed, torch
from transformers import AutoConfig
from transformers.integrations import HfDeepSpeedConfig
from modeling_xgenmm import XGenMMForConditionalGeneration

deepspeed.init_distributed(dist_backend="gloo")
ds_config = {
    "train_micro_batch_size_per_gpu": 1,
    "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
}
zero3 = HfDeepSpeedConfig(ds_config)  # must stay alive while the model is built
torch.manual_seed(0)
model = XGenMMForConditionalGeneration._from_config(AutoConfig.from_pretrained(sys.argv[1]))
partitioned = all(parameter.numel() == 0 and hasattr(parameter, "ds_id") for parameter in model.parameters())
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
ids = torch.randint(0, 900, (1, 8))
loss = engine(input_ids=ids, labels=ids).loss
engine.backward(loss)
engine.step()
state_dict = engine._zero3_consolidated_16bit_state_dict()
engine.module.save_pretrained(sys.argv[3], state_dict=state_dict)
torch.save(state_dict, os.path.join(sys.argv[3], "gathered.pt"))
print(json.dumps({"partitioned": partitioned, "loss": loss.item()}))
"""


@pytest.mark.slow
def test_deepspeed_zero3_builds_partitioned_trains_and_saves_a_loadable_model(tmp_path):
    pytest.importorskip("deepspeed")
    folder = tmp_path / "zero3"
    completed = subprocess.run(
        [sys.executable, "-c", ZERO3_SCRIPT, str(TINY_RANDOM), str(free_port()), str(folder)],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["partitioned"] and result["loss"] > 0
    gathered = torch.load(folder / "gathered.pt")
    loaded = XGenMMForConditionalGeneration.from_pretrained(folder).state_dict()
    assert set(gathered) <= set(loaded) and all(torch.equal(loaded[key], gathered[key]) for key in gathered)
