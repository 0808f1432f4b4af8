# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Messages of dependencies about each other that read as errors in every run and ask nothing of the user, dropped
(`drop_dependency_notices`). Imports nothing but the standard library, so that the package's `__init__` puts the
filters in place before transformers imports the libraries that print them."""

import logging
import warnings


# What bitsandbytes logs on import on CPUs with AVX512-BF16 when the `kernels` package will not fetch its optional
# faster 4-bit kernel from the Hub (an unverified publisher, or no network).
BITSANDBYTES_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
# What transformers (5.25) warns when peft (0.21) and TRL read the model's `is_gradient_checkpointing`, the name it
# deprecated for `is_activation_checkpointing`: at every LoRA run.
PEFT_DEPRECATED_NAME_WARNING = r"`is_gradient_checkpointing` is deprecated"
# What torch (2.14) logs when torchao (0.18) registers its enums as pytree constants at import; transformers imports
# torchao wherever it is installed (the `quant` and `test` extras), so every process printed two of these.
TORCHAO_ENUM_NOTICE = "is an Enum subclass and is now natively supported by torch.compile"


def _not_the_kernel_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(BITSANDBYTES_KERNEL_NOTICE)


def _not_the_enum_notice(record: logging.LogRecord) -> bool:
    return TORCHAO_ENUM_NOTICE not in str(record.msg)


def drop_dependency_notices() -> None:
    """Idempotent: drops three messages that one dependency prints about another:

    - bitsandbytes' import-time notice that an optional kernel could not be loaded (`BITSANDBYTES_KERNEL_NOTICE`),
      which asks to `pip install kernels` where it is installed. peft imports bitsandbytes wherever it is installed
      (the `qlora` and `test` extras), so every training and evaluation process printed it; QLoRA is unaffected,
      bitsandbytes uses its own CPU kernel. Its other messages stay.
    - transformers' `FutureWarning` that `is_gradient_checkpointing` is deprecated, raised where peft and TRL read it
      (`PEFT_DEPRECATED_NAME_WARNING`); this package reads the new name.
    - torch's warning that torchao registers enums the old way (`TORCHAO_ENUM_NOTICE`), twice at every import of
      transformers where torchao is installed; torchao's quantization is unaffected. torch's other pytree messages
      stay.
    """
    for name, keep in (
        ("bitsandbytes.backends.cpu.ops", _not_the_kernel_notice),
        ("torch.utils._pytree", _not_the_enum_notice),
    ):
        logger = logging.getLogger(name)
        if keep not in logger.filters:
            logger.addFilter(keep)
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATED_NAME_WARNING, category=FutureWarning)
