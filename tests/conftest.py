"""Fixtures shared by every test module."""

from pathlib import Path

import pytest
import torch

from paths import TINY_RANDOM, original_fixtures_dir


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tiny models run much faster on one thread here: with two, OpenMP spins against the other jobs on the two
    shared cores (2.7 s instead of 0.03 s a training step, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fixtures_dir() -> Path:
    return original_fixtures_dir()


@pytest.fixture
def tiny_config():
    from modeling_xgenmm import XGenMMConfig

    return XGenMMConfig.from_pretrained(TINY_RANDOM)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str]:
    """Absolute paths of the training tests' image files (`training_helpers.write_images`)."""
    from training_helpers import write_images

    folder = tmp_path_factory.mktemp("images")
    return [str(folder / path) for path in write_images(folder)]
