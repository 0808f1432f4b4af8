"""Without torchao (the `quant` extra), or with a torch older than its floor, asking for a quantized model says
what to install; the rest of the package does not need it."""

import sys
from unittest import mock

import pytest
import torch

from modeling_xgenmm.inference import quantization_config


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantization_config_names_the_extra_and_the_torch_it_needs_when_torchao_cannot_be_imported(kind):
    # None entries make `import torchao...` raise ImportError, as a missing torchao (or one that fails) does; each
    # submodule already imported needs its own
    unimportable = {name: None for name in sys.modules if name == "torchao" or name.startswith("torchao.")}
    with mock.patch.dict(sys.modules, unimportable | {"torchao": None}), pytest.raises(ImportError) as raised:
        quantization_config(kind)
    message = str(raised.value)
    assert f"{kind} inference needs torchao 0.18 with torch>=2.11" in message
    assert "pip install 'xgen-mm[quant]'" in message
    assert f"torch {torch.__version__}" in message
