"""transformers' own processor and image-processor test mixins, run against this package as an upstreamed model's test
files run them, in any-resolution and in base mode.

The mixins are not kept here: `upstream_tests.py` takes them, unmodified, from the source distribution of the
installed transformers version (cached outside the repository; the module is skipped, saying why, when the archive
cannot be had). `upstream_support/utils/fetch_hub_objects_for_ci.py` is ours: it gives the mixins local pictures for
their image URLs. What is written here is what every model's test file writes: the processor under test, its
components and the image-processing tester.
"""

import sys
import unittest
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import modeling_xgenmm  # noqa: F401  (registers the classes with the Auto classes, as transformers does for its own)
from paths import TINY_RANDOM
from upstream_tests import UpstreamTestsUnavailable, cache_differences, upstream_tests_dir
from xgenmm_processing import XGenMMImageProcessor, XGenMMImageProcessorPil, XGenMMProcessor


try:
    UPSTREAM = upstream_tests_dir()
except UpstreamTestsUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

# Ours first: the mixins append the archive's own `utils/` (absent from it) to sys.path and import from there.
OUR_SUPPORT = Path(__file__).resolve().parent / "upstream_support" / "utils"
sys.path.insert(0, str(OUR_SUPPORT))
sys.path.insert(0, str(UPSTREAM / "tests"))

import fetch_hub_objects_for_ci  # noqa: E402
import test_image_processing_common  # noqa: E402
import test_processing_common  # noqa: E402
from test_image_processing_common import ImageProcessingTester, ImageProcessingTestMixin  # noqa: E402
from test_processing_common import ProcessorTesterMixin  # noqa: E402


def test_upstream_files_are_those_taken_from_the_archive():
    differences = cache_differences(UPSTREAM)
    assert not differences, f"{UPSTREAM} changed since taken from the archive (delete it to refetch): {differences}"


def test_mixins_use_our_offline_media():
    assert Path(fetch_hub_objects_for_ci.__file__).resolve().parent == OUR_SUPPORT
    for mixins in (test_processing_common, test_image_processing_common):
        assert mixins.url_to_local_path is fetch_hub_objects_for_ci.url_to_local_path, mixins.__file__


def tiny_image_processor(backend=XGenMMImageProcessor, **overrides):
    return backend.from_pretrained(TINY_RANDOM, **overrides)


class XGenMMProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    """Any-resolution mode (the instruct models): the tiny-random folder's processor."""

    processor_class = XGenMMProcessor
    image_processor_overrides = {}

    @classmethod
    def _setup_tokenizer(cls):
        return AutoTokenizer.from_pretrained(TINY_RANDOM)

    @classmethod
    def _setup_image_processor(cls):
        return tiny_image_processor(**cls.image_processor_overrides)

    @classmethod
    def prepare_processor_dict(cls):
        return {"chat_template": (TINY_RANDOM / "chat_template.jinja").read_text(), "image_seq_length": 8}


class XGenMMBaseProcessorTest(XGenMMProcessorTest):
    """Base mode (the pretrained model): one squash-resized view per image."""

    image_processor_overrides = {"anyres": False}


class XGenMMImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        reference = tiny_image_processor(**parent.image_processor_overrides)
        kwargs.setdefault("size", dict(reference.size))
        kwargs.setdefault("anyres", reference.anyres)
        kwargs.setdefault("image_grid_pinpoints", [list(grid) for grid in reference.image_grid_pinpoints])
        kwargs.setdefault("image_mean", list(reference.image_mean))
        kwargs.setdefault("image_std", list(reference.image_std))
        kwargs.setdefault("do_normalize", True)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        return {"pil": XGenMMImageProcessorPil, "torchvision": XGenMMImageProcessor}

    def expected_output_image_shape(self, images):
        # One row per image: its views, then zero views up to the most any image can have (as LLaVA-NeXT's tester).
        views = XGenMMImageProcessor(**self.prepare_image_processor_dict()).get_max_num_image_views()
        return views, self.num_channels, self.size["height"], self.size["width"]


class XGenMMImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = XGenMMImageProcessingTester
    image_processor_overrides = {}

    # The same skip as LLaVA-NeXT's image-processing test, for the same reason: the views are made from RGB pictures
    # (the released pipeline converts every image to RGB first), so 4-channel PIL and numpy inputs are not treated
    # alike; a 4-channel array meets a 3-channel normalization.
    @unittest.skip(reason="XGenMMImageProcessor doesn't treat 4 channel PIL and numpy consistently yet")
    def test_call_numpy_4_channels(self):
        pass


class XGenMMBaseImageProcessingTest(XGenMMImageProcessingTest):
    image_processor_overrides = {"anyres": False}
