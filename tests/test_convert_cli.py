"""The `xgenmm convert` command: its output is a Hub folder that reproduces the original model without this package."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from isolation import run_isolated
from modeling_xgenmm.cli import main
from original_fixtures import (
    assert_forward_matches_recording,
    build_inputs,
    case_images,
    recorded_case,
    recorded_case_names,
)
from paths import original_fixtures_dir


def xgenmm_command() -> list[str]:
    """The installed console script, or the same entry point through `python -m` where scripts are not installed."""
    script = shutil.which("xgenmm", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "modeling_xgenmm.cli"]


def test_converted_folder_reproduces_recorded_logits_with_trust_remote_code_and_no_package(tmp_path):
    fixtures = original_fixtures_dir()
    cases = [recorded_case(fixtures, name) for name in recorded_case_names()]
    case = next(case for case in cases if case.variant == "instruct" and case.image_keys)
    original, output_dir = fixtures / "checkpoints" / "instruct", tmp_path / "converted"
    result = subprocess.run(
        [*xgenmm_command(), "convert", str(original), str(output_dir), "--dtype", "float32"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Converting weights" in result.stderr  # the progress bar

    image_token_id = json.loads((output_dir / "config.json").read_text())["image_token_id"]
    inputs = build_inputs(case, "", image_token_id)
    torch.save(
        {**inputs, **case_images(fixtures, case), "labels": case.tensors["fwd_expanded_labels"].long()},
        tmp_path / "inputs.pt",
    )
    outcome = run_isolated(
        f"""
        import json, torch
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(output_dir)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            output = model(**torch.load("inputs.pt"))
        torch.save({{"logits": output.logits, "loss": output.loss}}, "outputs.pt")
        print(json.dumps({{"class": type(model).__module__}}))
        """,
        cwd=tmp_path,
    )
    assert outcome["class"].startswith("transformers_modules.")
    outputs = torch.load(tmp_path / "outputs.pt")
    assert_forward_matches_recording(outputs["logits"], outputs["loss"], case)


def test_convert_help_describes_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "ORIGINAL" in usage and "OUT" in usage and "{bfloat16,float32}" in usage


def test_command_without_subcommand_lists_the_subcommands(capsys):
    assert main([]) == 2
    assert "convert" in capsys.readouterr().err


def test_convert_reports_a_folder_that_is_not_an_original_checkpoint(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(tmp_path / "other"), str(tmp_path / "out")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("xgenmm convert: error:") and "not an original Salesforce xGen-MM checkpoint" in error
