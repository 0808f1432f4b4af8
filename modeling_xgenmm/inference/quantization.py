# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Weight-only quantization of the language model, through transformers' `TorchAoConfig` (torchao: the `quant`
extra), and the CPU kernel that makes its int8 weights fast to decode with.

What is quantized: the linear layers of the language model's decoder layers (attention `qkv_proj` and `o_proj`, MLP
`gate_up_proj` and `down_proj`) and the head (`lm_head`), i.e. every weight a decoding step reads but the input
embedding's one row per token. The vision tower and the resampler (`UNQUANTIZED_MODULES`) run once per image, at the
prefill, and stay in the model's dtype, as does the input embedding (transformers quantizes linear layers only).

- `int8`: torchao's `Int8WeightOnlyConfig`, one scale per output row.
- `int4`: torchao's CPU int4 layout (`PrototypeInt4WeightOnlyConfig`: `Int4OpaqueTensor`, the
  `_weight_int4pack_mm_for_cpu` kernel; its `Int4WeightOnlyConfig` needs the CUDA-only `mslk` package) for the
  decoder layers, one scale and zero point per `group_size` inputs; the head in int8, since the CPU int4 packing needs
  output rows in multiples of 16 and a vocabulary need not be one (32015 in the benchmarks' `small` preset). torchao
  has no safetensors format for `Int4OpaqueTensor`: an int4 model cannot be saved, quantize it when loading.

Both compute with the model's dtype as activations; on a CPU load the model in bfloat16 (`dtype=torch.bfloat16`): the
int8 kernels of PyTorch (`_weight_int8pack_mm`) and inductor take bfloat16 activations, and with float32 ones torchao
dequantizes every weight before a float32 product, slower than float32 weights.
"""

import torch
from transformers import TorchAoConfig


QUANTIZATIONS = ("int8", "int4")
# Module-name prefixes from the model's root that keep the model's dtype; given explicitly, they replace transformers'
# default skips (which would leave the head unquantized).
UNQUANTIZED_MODULES = ["model.vision_tower", "model.resampler"]
# Up to this many rows (tokens of a batch), PyTorch's int8 kernel beats dequantizing the weight for a dense product;
# beyond it (prefills, large batches) dequantizing wins (measured on the `small` preset's shapes, one CPU thread).
CPU_KERNEL_MAX_ROWS = 16
# The weights of the decoder layers' linear layers, by their names (`*_proj`: Phi-3's, Llama's, Qwen's), as a
# `FqnToConfig` pattern: the weights only, so that norms and biases are never matched.
DECODER_PROJECTIONS = r"re:model\.language_model\.layers\.\d+\..*_proj\.weight"
HEAD = "lm_head.weight"  # its weight: a module's name would quantize its bias too
_TORCHAO_LINEAR = {}  # torchao's linear of `Int8Tensor`, replaced by `register_cpu_int8_kernel`


def quantization_config(kind: str = "int8", group_size: int = 128) -> TorchAoConfig:
    """The `quantization_config` of `from_pretrained` that quantizes the language model's weights as the module
    docstring says; `group_size` (int4 only) is the number of inputs that share a scale and zero point."""
    try:
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import FqnToConfig, Int8WeightOnlyConfig
    except ImportError as error:  # not installed, or a torch older than torchao 0.18's floor (2.11)
        raise ImportError(
            f"{kind} inference needs torchao 0.18 with torch>=2.11 (pip install 'xgen-mm[quant]'); importing torchao "
            f"with torch {torch.__version__} failed: {error}"
        ) from error

    if kind == "int8":
        quant_type = Int8WeightOnlyConfig()
    elif kind == "int4":
        quant_type = FqnToConfig(
            {
                DECODER_PROJECTIONS: PrototypeInt4WeightOnlyConfig(group_size=group_size),
                HEAD: Int8WeightOnlyConfig(),
            }
        )
    else:
        raise ValueError(f"kind is one of {QUANTIZATIONS}, got {kind!r}")
    return TorchAoConfig(quant_type, modules_to_not_convert=list(UNQUANTIZED_MODULES))


def register_cpu_int8_kernel() -> bool:
    """Makes torchao's int8 weight-only linear layers run PyTorch's int8 kernel (`_weight_int8pack_mm`) on a CPU for
    bfloat16 / float16 activations of up to `CPU_KERNEL_MAX_ROWS` rows, uncompiled: torchao 0.18 converts the whole
    int8 weight to the activations' dtype at every call there (more bytes moved than the unquantized weight), which
    inductor rewrites into an int8 kernel when compiled, but eager decoding does not. Every other call goes to
    torchao's own implementation. Registered through torchao's extension point for its tensor types
    (`Int8Tensor.implements_torch_function`), process-wide; importing `modeling_xgenmm` calls it. Returns whether
    torchao (the `quant` extra) is there to register with."""
    try:
        from torchao.quantization import Int8Tensor
    except ImportError:
        return False
    # torchao's own implementation, for the calls the kernel does not take (its table is where torchao keeps it)
    implementation = Int8Tensor._TORCH_FN_TABLE[Int8Tensor][torch.nn.functional.linear]
    if getattr(implementation, "__wrapped__", None) is not _int8_weight_only_linear:
        _TORCHAO_LINEAR["int8"] = implementation
        Int8Tensor.implements_torch_function(torch.nn.functional.linear)(_int8_weight_only_linear)
    return True


def _takes_cpu_kernel(activation: torch.Tensor, weight, rows: int) -> bool:
    """Whether `_weight_int8pack_mm` computes this product: eager (under `torch.compile` torchao's implementation is
    what inductor rewrites into its own int8 kernel; handed this op instead, inductor 2.14's lowering fails on inputs
    it has not materialised), a CPU, bfloat16 / float16 activations, few rows, and an int8 weight-only tensor with one
    scale per output row."""
    return (
        not torch.compiler.is_compiling()
        and activation.device.type == "cpu"
        and activation.dtype in (torch.bfloat16, torch.float16)
        and rows <= CPU_KERNEL_MAX_ROWS
        and weight.qdata.device.type == "cpu"
        and weight.qdata.dim() == 2
        and weight.act_quant_kwargs is None
        and weight.act_pre_scale is None
        and tuple(weight.block_size) == (1, weight.qdata.shape[-1])
    )


def _int8_weight_only_linear(func, types, args, kwargs):
    """`torch.nn.functional.linear(activation, weight, bias)` for an `Int8Tensor` weight (see
    `register_cpu_int8_kernel`)."""
    kwargs = kwargs or {}
    activation, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    rows = activation.numel() // activation.shape[-1]
    if not _takes_cpu_kernel(activation, weight, rows):
        return _TORCHAO_LINEAR["int8"](func, types, args, kwargs)
    output = torch.ops.aten._weight_int8pack_mm(
        activation.reshape(rows, activation.shape[-1]), weight.qdata, weight.scale.reshape(-1).to(activation.dtype)
    ).reshape(*activation.shape[:-1], weight.qdata.shape[0])
    return output if bias is None else output + bias


__all__ = [
    "CPU_KERNEL_MAX_ROWS",
    "QUANTIZATIONS",
    "UNQUANTIZED_MODULES",
    "quantization_config",
    "register_cpu_int8_kernel",
]
