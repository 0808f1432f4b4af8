"""Weight-only quantized inference (`modeling_xgenmm/inference/quantization.py`): transformers' `TorchAoConfig` with
the package's choice of layers, on the recorded checkpoints of the original code; greedy ids follow fp32's under the
margin rule (`margin_rule.py`); the CPU int8 kernel; saving, reloading, and loading a quantized Hub folder where the
package is not installed."""

import json
from unittest import mock

import pytest
import torch

from isolation import run_isolated
from margin_rule import compared_steps, greedy_with_logits, in_model_dtype
from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.inference import UNQUANTIZED_MODULES, quantization_config
from modeling_xgenmm.inference.quantization import CPU_KERNEL_MAX_ROWS
from original_fixtures import build_inputs, case_images, recorded_case, recorded_case_names
from paths import original_fixtures_dir


pytestmark = pytest.mark.core
# torchao 0.18 (the `quant` extra, in `test`) needs torch>=2.11; .ci/run's oldest-torch corner runs without it
torchao_quantization = pytest.importorskip("torchao.quantization", reason="torchao (the quant extra) is not installed")

# The tiny checkpoints' linear layers take 64 or 128 inputs: int4 groups of 32 inputs fit them (the default 128 does
# not fit 64, and torchao would leave those layers unquantized).
INT4_GROUP_SIZE = 32
KINDS = {"int8": {}, "int4": {"group_size": INT4_GROUP_SIZE}}


@pytest.fixture(scope="module")
def fixtures():
    return original_fixtures_dir()


def load(fixtures, variant: str, kind: str | None):
    """A recorded checkpoint: fp32, or bf16 with its language model quantized (`kind`)."""
    if kind is None:
        return XGenMMForConditionalGeneration.from_pretrained(fixtures / "checkpoints" / variant).eval()
    return XGenMMForConditionalGeneration.from_pretrained(
        fixtures / "checkpoints" / variant,
        dtype=torch.bfloat16,
        quantization_config=quantization_config(kind, **KINDS[kind]),
    ).eval()


@pytest.fixture(scope="module")
def models(fixtures):
    """{variant: {None (fp32), "int8", "int4": model}}."""
    return {
        variant: {kind: load(fixtures, variant, kind) for kind in (None, *KINDS)} for variant in ("base", "instruct")
    }


def weight_kind(module: torch.nn.Module) -> str:
    weight = module.weight.data
    return type(weight).__name__ if type(weight) is not torch.Tensor else str(weight.dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_the_language_models_linear_layers_and_head_are_quantized_and_the_rest_keeps_its_dtype(models, kind):
    model = models["instruct"][kind]
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    decoder = {weight_kind(module) for name, module in linears.items() if name.startswith("model.language_model.")}
    assert decoder == {"Int8Tensor" if kind == "int8" else "Int4OpaqueTensor"}
    assert weight_kind(model.lm_head) == "Int8Tensor" and model.lm_head.bias.dtype == torch.bfloat16
    kept = {weight_kind(module) for name, module in linears.items() if name.startswith(tuple(UNQUANTIZED_MODULES))}
    assert kept == {"torch.bfloat16"}
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", KINDS)
def test_quantized_greedy_ids_follow_fp32_under_the_margin_rule_on_every_recorded_case(fixtures, models, kind):
    compared = {}
    for case_name in recorded_case_names():
        case = recorded_case(fixtures, case_name)
        fp32, quantized = models[case.variant][None], models[case.variant][kind]
        inputs = build_inputs(case, "gen_", fp32.config.image_token_id)
        images = case_images(fixtures, case)
        kwargs = case.info["gen_kwargs"]
        reference = greedy_with_logits(fp32, inputs, images, kwargs)
        variant = greedy_with_logits(quantized, inputs, images, kwargs)
        # a real approximation: far from float32 rounding
        assert (variant[1][:, :1] - reference[1][:, :1]).abs().amax() > 1e-3, case_name
        for row, steps in enumerate(compared_steps(*reference, *variant, kwargs["eos_token_id"])):
            compared[case_name, row] = steps
    if kind == "int8":
        # not vacuous (int4's error on these random tiny weights is larger than every margin: no step is compared)
        assert sum(compared.values()) > 0, compared


def test_eager_int8_decoding_on_cpu_runs_pytorch_int8_kernel_with_torchaos_numbers(models):
    head = models["instruct"]["int8"].lm_head
    for rows in (1, CPU_KERNEL_MAX_ROWS, CPU_KERNEL_MAX_ROWS + 1):
        hidden = torch.randn(rows, head.in_features, dtype=torch.bfloat16)
        with mock.patch("torch.ops.aten._weight_int8pack_mm", wraps=torch.ops.aten._weight_int8pack_mm) as kernel:
            output = head(hidden)
        assert kernel.call_count == (rows <= CPU_KERNEL_MAX_ROWS), rows
        weight, bias = head.weight.dequantize().float(), head.bias.float()
        # the exact product of the int8 weights plus the bias, within bf16 rounding of the terms it sums
        error = (output.float() - (hidden.float() @ weight.T + bias)).abs()
        assert (error <= (hidden.float().abs() @ weight.abs().T + bias.abs()) * 2**-7).all(), (rows, error.max())


def test_an_int8_model_saves_and_reloads_with_the_same_weights_and_ids(fixtures, models, tmp_path):
    quantized = models["instruct"]["int8"]
    quantized.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"
    reloaded = XGenMMForConditionalGeneration.from_pretrained(tmp_path).eval()
    for name, weight in quantized.state_dict().items():
        again = reloaded.state_dict()[name]
        if isinstance(weight, torchao_quantization.Int8Tensor):
            assert isinstance(again, torchao_quantization.Int8Tensor) and torch.equal(again.qdata, weight.qdata), name
            assert torch.equal(again.scale, weight.scale), name
        else:
            assert torch.equal(again, weight), name
    case = recorded_case(fixtures, "i08_batch3_mixed")
    inputs = build_inputs(case, "gen_", quantized.config.image_token_id)
    images, kwargs = case_images(fixtures, case), case.info["gen_kwargs"]
    assert torch.equal(
        greedy_with_logits(reloaded, inputs, images, kwargs)[0],
        greedy_with_logits(quantized, inputs, images, kwargs)[0],
    )


def test_an_int4_model_refuses_to_be_saved_naming_why(models, tmp_path):
    with pytest.raises(ValueError, match="cannot be saved: .*Int4OpaqueTensor.*torchao writes no safetensors"):
        models["instruct"]["int4"].save_pretrained(tmp_path)


def test_quantization_config_names_the_kinds_it_knows():
    with pytest.raises(ValueError, match="kind is one of \\('int8', 'int4'\\), got 'int2'"):
        quantization_config("int2")


def test_a_quantized_hub_folder_loads_with_trust_remote_code_where_the_package_is_not_installed(
    fixtures, models, tmp_path
):
    """The folder `save_pretrained` writes (code files and `auto_map` included) loads int8 weights without the package
    (torchao's own int8 linear, without the package's CPU kernel) and decodes by the margin rule."""
    folder = tmp_path / "int8"
    models["instruct"]["int8"].save_pretrained(folder)
    assert (folder / "modeling_xgenmm.py").is_file()
    case = recorded_case(fixtures, "i08_batch3_mixed")
    fp32 = models["instruct"][None]
    inputs = build_inputs(case, "gen_", fp32.config.image_token_id)
    images, kwargs = case_images(fixtures, case), case.info["gen_kwargs"]
    torch.save({**inputs, **in_model_dtype(models["instruct"]["int8"], images)}, tmp_path / "inputs.pt")
    result = run_isolated(
        f"""
        import json, torch
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        output = model.generate(**torch.load("inputs.pt"), max_new_tokens={kwargs["max_new_tokens"]},
                                eos_token_id={kwargs["eos_token_id"]}, pad_token_id={kwargs["pad_token_id"]},
                                do_sample=False, output_logits=True, return_dict_in_generate=True)
        torch.save({{"sequences": output.sequences, "logits": torch.stack(output.logits, 1).float()}}, "output.pt")
        print(json.dumps({{"class": type(model).__module__, "head": type(model.lm_head.weight.data).__name__,
                          "layer": type(model.model.language_model.layers[0].mlp.down_proj.weight.data).__name__}}))
        """,
        cwd=tmp_path,
    )
    assert result["class"].startswith("transformers_modules.")
    assert result["head"] == result["layer"] == "Int8Tensor"
    output = torch.load(tmp_path / "output.pt")
    variant = output["sequences"][:, inputs["input_ids"].shape[1] :], output["logits"]
    compared_steps(*greedy_with_logits(fp32, inputs, images, kwargs), *variant, kwargs["eos_token_id"])
