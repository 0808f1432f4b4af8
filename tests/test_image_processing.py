"""XGenMMImageProcessorPil reproduces the released image processor exactly; XGenMMImageProcessor stays within its
documented tolerance of it; bad images fail with clear messages."""

import json
import time

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch

from paths import TINY_RANDOM, original_fixtures_dir
from processing_helpers import (
    as_base64,
    fixture_float,
    fixture_pixels,
    original_views,
    png_bytes,
    png_with_header_size,
    released_grids_hw,
    released_view_size,
    synthetic_image,
)
from xgenmm_processing import XGenMMImageProcessor, XGenMMImageProcessorPil


pytestmark = pytest.mark.core


LEVEL = 2 / 255  # one uint8 level of a view, in normalised pixel values
BACKENDS = [XGenMMImageProcessorPil, XGenMMImageProcessor]


@pytest.fixture(scope="module")
def released():
    fixtures_dir = original_fixtures_dir()
    index = json.loads((fixtures_dir / "image_processing" / "index.json").read_text())
    images = {key: PIL.Image.open(fixtures_dir / entry["file"]) for key, entry in index["images"].items()}
    return index["images"], images, fixture_pixels(fixtures_dir), released_grids_hw(fixtures_dir)


def test_pil_backend_reproduces_released_processor_on_every_fixture_image(released):
    entries, images, pixels, grids = released
    size = dict(zip(("height", "width"), released_view_size(original_fixtures_dir())))
    anyres = XGenMMImageProcessorPil(image_grid_pinpoints=grids, size=size)
    base = XGenMMImageProcessorPil(anyres=False, size=size)
    for key, entry in entries.items():
        width, height = entry["size_wh"]
        out = anyres(images[key], return_tensors="pt")
        views = entry["anyres"]["shape"][0]
        # One row: the image's views, then zero views up to the most the grid gives any image.
        assert list(out["pixel_values"].shape) == [1, anyres.get_max_num_image_views(), *entry["anyres"]["shape"][1:]]
        assert anyres.get_num_image_views((height, width)) == views, key
        assert not out["pixel_values"][0, views:].any(), key
        assert torch.equal(out["image_sizes"], torch.tensor([[height, width]])), key
        real = out["pixel_values"][0, :views]
        assert (real - fixture_float(pixels[entry["anyres"]["tensor"]])).abs().max() <= 1e-6, key
        base_view = base(images[key], return_tensors="pt")["pixel_values"]
        assert list(base_view.shape) == [1, 1, *entry["base"]["shape"]], key
        assert (base_view[0, 0] - fixture_float(pixels[entry["base"]["tensor"]])).abs().max() <= 1e-6, key
        if "anyres_rgbfirst" in entry:  # what the released drivers fed: the image converted to RGB first
            rgb_views = anyres(images[key].convert("RGB"), return_tensors="pt")["pixel_values"][0, :views]
            assert (rgb_views - fixture_float(pixels[entry["anyres_rgbfirst"]["tensor"]])).abs().max() <= 1e-6, key


# The torchvision backend's documented bounds (README, "Image processing backends"): uint8 levels and the fraction of
# values that differ from the released processor's, per image mode.
TORCHVISION_BOUNDS = {"RGB": (2, 0.01), "L": (2, 0.01), "CMYK": (2, 0.01), "P": (0, 0), "1": (0, 0)}
TORCHVISION_BOUNDS |= {"RGBA": (25, 0.01), "LA": (25, 0.01)}


def test_torchvision_backend_is_within_its_documented_bounds_on_the_released_processors_images(released):
    entries, images, pixels, grids = released
    size = dict(zip(("height", "width"), released_view_size(original_fixtures_dir())))
    processor = XGenMMImageProcessor(image_grid_pinpoints=grids, size=size)
    for key, entry in entries.items():
        max_levels, max_fraction = TORCHVISION_BOUNDS[images[key].mode]
        views = entry["anyres"]["shape"][0]
        difference = (
            processor(images[key], return_tensors="pt")["pixel_values"][0, :views]
            - fixture_float(pixels[entry["anyres"]["tensor"]])
        ).abs()
        assert difference.max() <= max_levels * LEVEL + 1e-5, (key, difference.max().item() / LEVEL)
        assert (difference > 1e-5).float().mean() <= max_fraction, key


@pytest.mark.parametrize("mode", sorted(TORCHVISION_BOUNDS))
def test_torchvision_backend_tolerance_per_mode(mode):
    max_levels, max_fraction = TORCHVISION_BOUNDS[mode]
    pil, fast = XGenMMImageProcessorPil(), XGenMMImageProcessor()
    for width, height in [(640, 480), (300, 1000), (50, 50), (1500, 200)]:
        image = synthetic_image(mode, width, height)
        views = pil.get_num_image_views((height, width))  # the fraction is over real values, not the zero padding
        difference = (
            pil(image, return_tensors="pt")["pixel_values"][0, :views]
            - fast(image, return_tensors="pt")["pixel_values"][0, :views]
        ).abs()
        assert difference.max() <= max_levels * LEVEL + 1e-5, (width, height, difference.max().item() / LEVEL)
        assert (difference > 1e-5).float().mean() <= max_fraction, (width, height)


def test_torchvision_backend_normalizes_with_a_backend_normalize_that_returns_a_copy(monkeypatch):
    """transformers < 5.18's torchvision backend has no in-place `normalize` (it takes and ignores `inplace`, returning
    a new tensor): the views must be the normalized ones either way."""
    image = synthetic_image("RGB", 300, 200)
    expected = XGenMMImageProcessor()(image, return_tensors="pt")["pixel_values"]
    backend_normalize = XGenMMImageProcessor.normalize

    def normalize_as_a_copy(self, image, mean, std, inplace=False, **kwargs):
        return backend_normalize(self, image.clone(), mean, std, inplace=True)

    monkeypatch.setattr(XGenMMImageProcessor, "normalize", normalize_as_a_copy)
    assert torch.equal(XGenMMImageProcessor()(image, return_tensors="pt")["pixel_values"], expected)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "1"])
def test_pil_backend_follows_released_pipeline_in_every_8_bit_mode(mode):
    image = synthetic_image(mode, 300, 170, seed=3)
    assert image.mode == mode
    grids_wh = [[width, height] for height, width in XGenMMImageProcessorPil.image_grid_pinpoints]
    expected = fixture_float(torch.from_numpy(original_views(image, grids_wh, 384)))
    out = XGenMMImageProcessorPil()(image, return_tensors="pt")["pixel_values"][0]
    assert out.shape == (5, 3, 384, 384)  # 300x170 fits 768 wide x 384 high best: 2 crops + the global view
    assert (out[:3] - expected).abs().max() <= 1e-6 and not out[3:].any()


def test_non_rgb_modes_give_rgb_values():
    # Pillow's conversions: CMYK cyan -> (0, 255, 255); 1-bit white -> white.
    cyan = PIL.Image.new("CMYK", (20, 10), (255, 0, 0, 0))
    white = PIL.Image.new("1", (20, 10), 1)
    for backend in BACKENDS:
        processor = backend(anyres=False, size={"height": 16, "width": 16})
        cyan_view, white_view = processor([cyan, white], return_tensors="pt")["pixel_values"][:, 0]
        assert torch.equal(cyan_view[:, 8, 8], torch.tensor([-1.0, 1.0, 1.0]))
        assert torch.equal(white_view, torch.ones(3, 16, 16))


def eight_bit_picture() -> np.ndarray:
    """A gray (height, width) uint8 picture with gradients and sharp edges, every level 0-255 used."""
    rows, columns = np.mgrid[0:48, 0:80]
    picture = (rows * 5 + columns * 3) % 256
    picture[10:20, 30:60] = 255 - picture[10:20, 30:60]
    return picture.astype(np.uint8)


def high_bit_depth_versions(picture: np.ndarray) -> dict:
    """The same picture as 16-bit, 32-bit integer and float images, arrays and tensors (one input kind each)."""
    sixteen = picture.astype(np.uint16) * 257
    return {
        "PIL I;16": PIL.Image.fromarray(sixteen),
        "PIL I": PIL.Image.fromarray(sixteen.astype(np.int32)),
        "PIL F in [0, 1]": PIL.Image.fromarray(picture.astype(np.float32) / 255),
        "uint16 array": sixteen[..., None],
        "uint16 channels-first RGB array": np.stack([sixteen] * 3),
        "float32 array in [0, 1]": picture[..., None].astype(np.float32) / 255,
        "float64 tensor in [0, 1]": torch.from_numpy(np.stack([picture] * 3, -1).astype(np.float64) / 255),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_high_bit_depth_and_float_images_give_the_pixels_of_their_8_bit_version(backend, tmp_path):
    picture = eight_bit_picture()
    processor = backend()
    expected = processor(PIL.Image.fromarray(picture), return_tensors="pt")["pixel_values"]
    for name, image in high_bit_depth_versions(picture).items():
        assert torch.equal(processor(image, return_tensors="pt")["pixel_values"], expected), name
    # A 16-bit PNG file, given as a path and as the opened image.
    PIL.Image.fromarray(picture.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert PIL.Image.open(tmp_path / "sixteen.png").mode == "I;16"
    for image in (str(tmp_path / "sixteen.png"), PIL.Image.open(tmp_path / "sixteen.png")):
        assert torch.equal(processor(image, return_tensors="pt")["pixel_values"], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_outside_the_range_of_their_type_are_refused(backend):
    processor = backend()
    with pytest.raises(
        ValueError, match=r"image 0 is a float array with values from -0.5 to 2; expected values in \[0, 1\]"
    ):
        processor(np.linspace(-0.5, 2, 64, dtype=np.float32).reshape(8, 8, 1))
    with pytest.raises(ValueError, match=r"image 0 is a float \(mode F\) image with values from 255 to 255; expected"):
        processor(PIL.Image.fromarray(np.full((8, 8), 255, np.float32)))
    with pytest.raises(ValueError, match=r"image 0 is a 32-bit integer \(mode I\) image with values from -1 to"):
        processor(PIL.Image.fromarray(np.full((8, 8), -1, np.int32)))
    with pytest.raises(
        TypeError, match=r"image 0 is an array of dtype int64; expected uint8 pixels \(0-255\), uint16"
    ):
        processor(np.zeros((8, 8, 3), np.int64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_gives_the_same_pixels_as_a_path_or_opened_with_exif_orientation_and_alpha(backend, tmp_path):
    rgba = synthetic_image("RGBA", 60, 40, seed=5)
    rgba.save(tmp_path / "alpha.png")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotated: viewers turn it 90 degrees clockwise
    synthetic_image("RGB", 60, 40, seed=6).save(tmp_path / "rotated.jpg", exif=exif)
    processor = backend()
    for name in ("alpha.png", "rotated.jpg"):
        path = str(tmp_path / name)
        by_path = processor(path, return_tensors="pt")
        opened = processor(PIL.Image.open(path), return_tensors="pt")
        assert torch.equal(by_path["pixel_values"], opened["pixel_values"]), name
        assert torch.equal(by_path["image_sizes"], opened["image_sizes"]), name
    # The EXIF orientation is applied: the 60x40 photo is seen 40 wide and 60 high.
    assert processor(str(tmp_path / "rotated.jpg"), return_tensors="pt")["image_sizes"].tolist() == [[60, 40]]
    upright = PIL.ImageOps.exif_transpose(PIL.Image.open(tmp_path / "rotated.jpg"))
    assert torch.equal(
        processor(upright, return_tensors="pt")["pixel_values"],
        processor(str(tmp_path / "rotated.jpg"), return_tensors="pt")["pixel_values"],
    )


def test_base_mode_is_one_squash_resized_view_of_configurable_size():
    images = [synthetic_image("RGB", 90, 30), synthetic_image("RGB", 20, 70)]
    for backend in BACKENDS:
        out = backend(anyres=False, size={"height": 56, "width": 56})(images, return_tensors="pt")
        assert out["pixel_values"].shape == (2, 1, 3, 56, 56)
        assert out["image_sizes"].tolist() == [[30, 90], [70, 20]]
    expected = fixture_float(torch.from_numpy(original_views(images[0], None, 56)))
    out = XGenMMImageProcessorPil(anyres=False, size={"height": 56, "width": 56})(images[0], return_tensors="pt")
    assert (out["pixel_values"] - expected).abs().max() <= 1e-6


def test_views_are_one_row_per_image_global_view_first():
    # tiny-random grids (height, width) [[112, 56], [56, 112], [112, 112], [56, 168], [168, 56]], 56-px views:
    # 30x60 (h x w) -> 56x112 (1x2 crops), 100x40 -> 112x56 (2x1), 56x56 -> 112x56 (first of the tied grids).
    images = [synthetic_image("RGB", 60, 30, seed=1), synthetic_image("RGB", 40, 100, seed=2)]
    processor = XGenMMImageProcessorPil.from_pretrained(TINY_RANDOM)
    out = processor(images, return_tensors="pt")
    # Rows are as wide as the most views any image can get: the 112x112 grid's 4 crops + the global view.
    assert processor.get_max_num_image_views() == 5 and out["pixel_values"].shape == (2, 5, 3, 56, 56)
    assert [processor.get_num_image_views(size) for size in [(30, 60), (100, 40), (56, 56)]] == [3, 3, 3]
    grids_wh = [[width, height] for height, width in processor.image_grid_pinpoints]
    expected = np.stack([original_views(image, grids_wh, 56) for image in images])
    assert (out["pixel_values"][:, :3] - fixture_float(torch.from_numpy(expected))).abs().max() <= 1e-6
    assert not out["pixel_values"][:, 3:].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_images_with_fewer_views_are_padded_with_zero_views(backend):
    # 200x40 (h x w) -> 3x1 crops + the global view = 4 views; 30x60 -> 1x2 crops + 1 = 3 views; 112x112 -> 2x2 + 1.
    processor = backend.from_pretrained(TINY_RANDOM)
    tall, wide = synthetic_image("RGB", 40, 200, seed=1), synthetic_image("RGB", 60, 30, seed=2)
    out = processor([tall, wide], return_tensors="pt")
    assert out["pixel_values"].shape == (2, 5, 3, 56, 56)
    alone = processor(wide, return_tensors="pt")["pixel_values"]
    # The same row whatever else is in the call, so rows from separate calls concatenate (pipelines, TRL).
    assert torch.equal(out["pixel_values"][1], alone[0]) and not alone[0, 3:].any() and alone[0, 2].any()
    assert out["pixel_values"][0, 3].any() and not out["pixel_values"][0, 4].any()
    square = processor(synthetic_image("RGB", 112, 112, seed=3), return_tensors="pt")["pixel_values"]
    assert square[0, 4].any()  # the widest image fills its row
    # Overrides change the width with the grid: one view in base mode, 3 for a 1x2-only grid.
    assert processor.get_max_num_image_views(anyres=False) == 1
    assert processor(wide, image_grid_pinpoints=[[56, 112]], return_tensors="pt")["pixel_values"].shape[1] == 3


def test_uint8_arrays_and_tensors_are_the_pil_images_of_their_pixels():
    image = synthetic_image("RGB", 70, 40)
    pixels = np.asarray(image)
    gray = image.convert("L")
    for backend in BACKENDS:
        processor = backend.from_pretrained(TINY_RANDOM)
        expected = processor(image, return_tensors="pt")["pixel_values"]
        for array in (pixels, pixels.transpose(2, 0, 1), torch.from_numpy(pixels.copy()).permute(2, 0, 1)):
            assert torch.equal(processor(array, return_tensors="pt")["pixel_values"], expected)
        assert torch.equal(
            processor(np.asarray(gray)[..., None], return_tensors="pt")["pixel_values"],
            processor(gray, return_tensors="pt")["pixel_values"],
        )


def test_empty_image_raises():
    for backend in BACKENDS:
        with pytest.raises(
            ValueError, match=r"image 1 is empty \(0x0 pixels, width x height\); expected at least 1x1"
        ):
            backend()([PIL.Image.new("RGB", (4, 4)), PIL.Image.new("RGB", (0, 0))])
        with pytest.raises(ValueError, match=r"image 0 is empty \(an array of shape \(0, 5, 3\)\)"):
            backend()(np.zeros((0, 5, 3), np.uint8))


def test_one_pixel_image_works():
    # 1x1 fits every grid equally (one effective pixel); the smallest waste, first in order, is 768 high x 384 wide.
    image = PIL.Image.new("RGB", (1, 1), (255, 0, 0))
    for backend in BACKENDS:
        out = backend()(image, return_tensors="pt")
        assert out["pixel_values"].shape == (1, 5, 3, 384, 384)
        out["pixel_values"] = out["pixel_values"][0]
        assert torch.equal(out["pixel_values"][0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
        # Resized to 384x384 and centred in 768x384: the top crop is red from row 192, the bottom one up to row 191.
        assert torch.equal(out["pixel_values"][1, :, 191, 7], torch.tensor([-1.0, -1.0, -1.0]))
        assert torch.equal(out["pixel_values"][1, :, 192, 7], torch.tensor([1.0, -1.0, -1.0]))
        assert torch.equal(out["pixel_values"][2, :, 191, 7], torch.tensor([1.0, -1.0, -1.0]))
        assert torch.equal(out["pixel_values"][2, :, 192, 7], torch.tensor([-1.0, -1.0, -1.0]))


@pytest.mark.parametrize("width, height", [(10000, 1), (1, 10000)])
def test_extremely_thin_images_work(width, height):
    # Fitted into any grid they keep no whole pixel across, so all grids tie at zero effective pixels and the one with
    # the least waste, 768 high x 384 wide, wins (the model computes the same grid from image_sizes).
    image = synthetic_image("RGB", width, height, seed=4)
    grids_wh = [[grid_width, grid_height] for grid_height, grid_width in XGenMMImageProcessorPil.image_grid_pinpoints]
    expected = fixture_float(torch.from_numpy(original_views(image, grids_wh, 384)))
    for backend in BACKENDS:
        out = backend()(image, return_tensors="pt")
        assert out["pixel_values"].shape == (1, 5, 3, 384, 384)
        assert out["image_sizes"].tolist() == [[height, width]]
        assert (out["pixel_values"][0, :3] - expected).abs().max() <= 2 * LEVEL + 1e-5
        assert backend(anyres=False)(image, return_tensors="pt")["pixel_values"].shape == (1, 1, 3, 384, 384)


def test_corrupt_files_raise(tmp_path):
    truncated = png_bytes(synthetic_image("RGB", 64, 64))[:300]
    (tmp_path / "truncated.png").write_bytes(truncated)
    (tmp_path / "random.png").write_bytes(np.random.default_rng(0).integers(0, 256, 512, np.uint8).tobytes())
    for backend in BACKENDS:
        processor = backend()
        with pytest.raises(ValueError, match=r"image 0 \('.*truncated.png'\) could not be decoded \(truncated or"):
            processor(str(tmp_path / "truncated.png"))
        with pytest.raises(ValueError, match=r"image file '.*random.png' is not an image Pillow can read"):
            processor(str(tmp_path / "random.png"))
        with pytest.raises(
            ValueError, match=r"image 0 \('.*truncated.png'\) could not be decoded \(truncated or corrupt file\)"
        ):
            processor(PIL.Image.open(tmp_path / "truncated.png"))
        with pytest.raises(
            ValueError, match=r"image 0 could not be decoded \(truncated or corrupt file\): image file"
        ):
            processor(as_base64(truncated))


def test_decompression_bombs_are_refused_from_the_header(tmp_path):
    # 10000 x 10000 is between Pillow's warning (MAX_IMAGE_PIXELS) and error (2x) thresholds; 10^10 is above both.
    for side in (10000, 100000):
        (tmp_path / f"bomb{side}.png").write_bytes(png_with_header_size(side, side))
    for backend in BACKENDS:
        for side in (10000, 100000):
            start = time.perf_counter()
            with pytest.raises(ValueError, match=r"larger than PIL.Image.MAX_IMAGE_PIXELS = 89478485 pixels"):
                backend()(str(tmp_path / f"bomb{side}.png"))
            assert time.perf_counter() - start < 5.0  # refused from the header, nothing decoded


def test_pil_images_above_the_pixel_limit_are_refused_before_decoding(monkeypatch):
    image = PIL.Image.open(__import__("io").BytesIO(png_bytes(synthetic_image("RGB", 40, 30))))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    for backend in BACKENDS:
        with pytest.raises(
            ValueError, match=r"image 0 \(40x30 = 1200 pixels\) is larger than PIL.Image.MAX_IMAGE_PIXELS = 1000"
        ):
            backend()(image)


def test_unsupported_input_type_raises():
    for backend in BACKENDS:
        with pytest.raises(TypeError, match=r"images must be PIL images, numpy arrays, torch tensors .* got int"):
            backend()([3])


def test_auto_image_processor_picks_backend_and_saves_both_in_auto_map(tmp_path):
    from transformers import AutoImageProcessor

    import modeling_xgenmm  # noqa: F401  (registers the Auto classes)

    assert type(AutoImageProcessor.from_pretrained(TINY_RANDOM, backend="pil")) is XGenMMImageProcessorPil
    fast = AutoImageProcessor.from_pretrained(TINY_RANDOM, backend="torchvision")
    assert type(fast) is XGenMMImageProcessor
    assert fast.size.height == 56 and fast.image_grid_pinpoints[0] == [112, 56] and fast.anyres is True
    fast.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"]["AutoImageProcessor"] == {
        "pil": "image_processing_xgenmm.XGenMMImageProcessorPil",
        "torchvision": "image_processing_xgenmm.XGenMMImageProcessor",
    }
    assert (tmp_path / "image_processing_xgenmm.py").is_file()
    reloaded = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(reloaded) is XGenMMImageProcessorPil and reloaded.image_grid_pinpoints == fast.image_grid_pinpoints
