# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Image processors for xGen-MM (BLIP-3): a PIL backend that reproduces the released processor exactly, and a
torchvision backend that follows it with batched tensor ops.

This file is copied verbatim into every Hub folder, so it imports only numpy, PIL, torch, `transformers` and its
`huggingface_hub` (torchvision guarded).
"""

import base64
import binascii
import io
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from huggingface_hub.utils import httpx
from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_processing_utils import BatchFeature, select_best_resolution
from transformers.image_transforms import divide_to_patches
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
    infer_channel_dimension_format,
    is_valid_image,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, is_torchvision_available


if is_torchvision_available():
    from torchvision.transforms.v2 import functional as tvF
    from transformers.image_utils import pil_torch_interpolation_mapping


# Released any-resolution grids as (height, width), in the released order: the first of equally good grids wins.
XGENMM_GRID_PINPOINTS = [[768, 384], [384, 768], [768, 768], [384, 1152], [1152, 384]]
EXIF_ORIENTATION = 0x0112
# Pillow's 16-bit, 32-bit integer and float modes: their values are not 8-bit levels.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class XGenMMImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    anyres (`bool`, *optional*, defaults to `True`):
        Any-resolution mode (instruct models): every image gives a squash-resized global view plus the crops of its
        best grid. `False` is the base-model mode: one squash-resized view per image.
    image_grid_pinpoints (`list[list[int]]`, *optional*):
        Any-resolution grids as (height, width) in pixels, multiples of `size`, in priority order.
    """

    anyres: bool
    image_grid_pinpoints: list[list[int]]


def fitted_size(image_size: tuple[int, int], target_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an image of `image_size` resized to fit `target_size` with its aspect ratio kept, the free
    side rounded up (LLaVA's rule; transformers' `get_patch_output_size` implements it for arrays only)."""
    height, width = image_size
    target_height, target_width = target_size
    if target_width / width < target_height / height:
        return min(math.ceil(height * (target_width / width)), target_height), target_width
    return target_height, min(math.ceil(width * (target_height / height)), target_width)


# Reading an image from a URL: seconds to wait for the server (connecting, then each read), and attempts in all.
# Connection failures, timeouts and server errors (5xx) are tried again after 1, 2, ... seconds; other answers are
# final (404: the image is not there).
IMAGE_URL_TIMEOUT = 10.0
IMAGE_URL_ATTEMPTS = 3
RETRIED_CLIENT_ERRORS = (408, 429)  # request timeout, too many requests: asking again later can succeed


class ImageLoadError(ValueError):
    """An image input that cannot be read: the message names the input and the cause."""


def _decompression_bomb_error(what: str, detail: str) -> ImageLoadError:
    return ImageLoadError(
        f"{what} is larger than PIL.Image.MAX_IMAGE_PIXELS = {PIL.Image.MAX_IMAGE_PIXELS} pixels, Pillow's "
        f"decompression-bomb limit ({detail}). Raise PIL.Image.MAX_IMAGE_PIXELS if you trust the image."
    )


def _describe(source: str) -> str:
    return repr(source if len(source) <= 100 else source[:97] + "...")


def fetch_url(url: str, timeout: float | None = None, attempts: int | None = None) -> bytes:
    """The body of `url`, waiting at most `timeout` seconds per connection or read (`IMAGE_URL_TIMEOUT`), in at most
    `attempts` tries (`IMAGE_URL_ATTEMPTS`); raises `ImageLoadError` naming the URL and the cause (HTTP status, DNS
    failure, refused connection, timeout)."""
    timeout = IMAGE_URL_TIMEOUT if timeout is None else timeout
    attempts = IMAGE_URL_ATTEMPTS if attempts is None else attempts
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.get(url, timeout=timeout, follow_redirects=True)
        except httpx.TimeoutException:
            cause = f"no answer within {timeout:g} s (timeout)"
        except httpx.ConnectError as error:
            reason = str(error)
            if "Name or service not known" in reason or "nodename nor servname" in reason or "getaddrinfo" in reason:
                cause = f"the host name could not be resolved (DNS: {reason})"
            elif "refused" in reason.lower():
                cause = f"the connection was refused ({reason})"
            else:
                cause = f"the connection failed ({reason or type(error).__name__})"
        except httpx.HTTPError as error:
            cause = f"the request failed ({type(error).__name__}: {error})"
        else:
            if response.status_code < 400:
                return response.content
            cause = f"the server answered HTTP {response.status_code} {response.reason_phrase}"
            if response.status_code < 500 and response.status_code not in RETRIED_CLIENT_ERRORS:
                attempts = attempt  # a client error does not go away by asking again
                break
        if attempt < attempts:
            time.sleep(attempt)
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    raise ImageLoadError(f"the image at {_describe(url)} could not be fetched: {cause}{tries}")


def load_image_source(source: str, timeout: float | None = None) -> "PIL.Image.Image":
    """An image from a URL, a file path or base64 text (a `data:` URI included), opened with Pillow in its own mode
    (the decoding rule of `decoded_image` applies to it as to an image passed opened). Refuses images above
    `PIL.Image.MAX_IMAGE_PIXELS` from their header, before any pixel is decoded."""
    if source.startswith(("http://", "https://")):
        what, data = f"the image at {_describe(source)}", io.BytesIO(fetch_url(source, timeout))
    elif os.path.isfile(source):
        what, data = f"the image file {_describe(source)}", source
    elif os.path.splitext(source)[1].lower() in PIL.Image.registered_extensions() and "," not in source:
        raise ImageLoadError(f"image file not found: {_describe(source)}")
    else:
        encoded = source.split(",", 1)[1] if source.startswith("data:") else source
        try:
            what, data = "the base64 image data", io.BytesIO(base64.b64decode(encoded, validate=True))
        except (ValueError, binascii.Error):
            raise ImageLoadError(
                f"{_describe(source)} is not an image URL (http:// or https://), an existing file, nor base64 image "
                "data"
            ) from None
    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x the limit; as an error it stops `Image.open` before decoding.
        warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
        try:
            return PIL.Image.open(data)
        except (PIL.Image.DecompressionBombWarning, PIL.Image.DecompressionBombError) as error:
            raise _decompression_bomb_error(what, str(error)) from error
        except PIL.UnidentifiedImageError:
            raise ImageLoadError(f"{what} is not an image Pillow can read (unknown or corrupt format)") from None
        except OSError as error:
            raise ImageLoadError(f"{what} could not be read: {error}") from error


def _as_pil(array: np.ndarray, index: int) -> "PIL.Image.Image":
    """A PIL image of the pixels of an array of shape (height, width[, channels]) or (channels, height, width),
    channels 1, 3 or 4: uint8 as they are, uint16 as 16-bit values, floats as values in [0, 1]."""
    shape_error = ValueError(
        f"image {index} is an array of shape {array.shape}; expected (height, width), (height, width, 1|3|4) or "
        "(1|3|4, height, width)"
    )
    if array.ndim == 3:
        try:
            channels_first = infer_channel_dimension_format(array, num_channels=(1, 3, 4)) == ChannelDimension.FIRST
        except ValueError:
            raise shape_error from None
        if channels_first:
            array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise shape_error
    if array.dtype == np.uint16:
        array = _eight_bit(array.astype(np.float64) / 65535 * 255)
    elif array.dtype.kind == "f":
        finite = np.isfinite(array).all()
        if not finite or (array.size and (array.min() < 0 or array.max() > 1)):
            low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
            raise ValueError(
                f"image {index} is a float array with values from {low:g} to {high:g}; expected values in [0, 1] "
                "(or uint8 pixels 0-255)"
            )
        array = _eight_bit(array.astype(np.float64) * 255)
    elif array.dtype != np.uint8:
        raise TypeError(
            f"image {index} is an array of dtype {array.dtype}; expected uint8 pixels (0-255), uint16 (0-65535), "
            "floats in [0, 1], or a PIL image"
        )
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def _eight_bit(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _high_bit_depth_to_eight_bit(image: "PIL.Image.Image", index: int) -> "PIL.Image.Image":
    """Images of Pillow's 16-bit, 32-bit integer and float modes as the 8-bit grayscale picture they show: 16-bit
    values (`I;16*`, and `I` within 0-65535) scaled by 255 / 65535, floats (`F`) in [0, 1] by 255. Pillow's own
    conversion clips them at 255 instead (a 16-bit image turns almost white, a float one black)."""
    values = np.asarray(image)
    if image.mode == "F":
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ValueError(
                f"image {index} is a float (mode F) image with values from {values.min():g} to {values.max():g}; "
                "expected values in [0, 1]"
            )
        return PIL.Image.fromarray(_eight_bit(values.astype(np.float64) * 255))
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(
            f"image {index} is a 32-bit integer (mode {image.mode}) image with values from {values.min()} to "
            f"{values.max()}; expected 16-bit values (0-65535)"
        )
    return PIL.Image.fromarray(_eight_bit(values.astype(np.float64) / 65535 * 255))


def decoded_image(image: ImageInput, index: int) -> "PIL.Image.Image":
    """Checks input image `index` and returns it as a decoded 8-bit PIL image, by one rule for every kind of input
    (a path, URL or base64 string is opened first, by `load_image_source`):

    - arrays and tensors of shape (height, width[, 1|3|4]) or (1|3|4, height, width): uint8 pixels as they are,
      uint16 as 16-bit values, floats as values in [0, 1] (anything else is refused);
    - the EXIF orientation of a photo is applied (the image as viewers show it);
    - 16-bit, 32-bit integer and float images become the 8-bit picture they show (`_high_bit_depth_to_eight_bit`);
    - every other mode (RGB, RGBA, L, LA, P, 1, CMYK, ...) is kept: resizing happens in the image's own mode, as in
      the released processor, and alpha is dropped when the views are converted to RGB.
    """
    if isinstance(image, PIL.Image.Image):
        width, height = image.size
    else:
        array = image.numpy(force=True) if isinstance(image, torch.Tensor) else np.asarray(image)
        if 0 in array.shape[:3]:
            raise ValueError(f"image {index} is empty (an array of shape {array.shape}); expected at least 1x1 pixels")
        image = _as_pil(array, index)
        width, height = image.size
    if height == 0 or width == 0:
        raise ValueError(f"image {index} is empty ({width}x{height} pixels, width x height); expected at least 1x1")
    if PIL.Image.MAX_IMAGE_PIXELS is not None and width * height > PIL.Image.MAX_IMAGE_PIXELS:
        raise _decompression_bomb_error(f"image {index} ({width}x{height} = {width * height} pixels)", "not decoded")
    try:
        image.load()
    except (OSError, SyntaxError) as error:
        name = f"image {index}" + (f" ({_describe(image.filename)})" if getattr(image, "filename", "") else "")
        raise ImageLoadError(f"{name} could not be decoded (truncated or corrupt file): {error}") from error
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = PIL.ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        image = _high_bit_depth_to_eight_bit(image, index)
    return image


class XGenMMImageProcessingMixin:
    """Settings, input checks and grid planning shared by both backends."""

    model_input_names = ["pixel_values", "image_sizes"]
    valid_kwargs = XGenMMImageProcessorKwargs

    anyres = True
    image_grid_pinpoints = XGENMM_GRID_PINPOINTS
    size = {"height": 384, "width": 384}
    resample = PILImageResampling.BICUBIC
    do_rescale = True
    do_normalize = True
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD

    def fetch_images(self, images):
        """Opens URL, path and base64 inputs (`load_image_source`: with a timeout, refusing decompression bombs);
        passes images through."""
        if isinstance(images, (list, tuple)):
            return [self.fetch_images(image) for image in images]
        if isinstance(images, str):
            return load_image_source(images)
        if is_valid_image(images):
            return images
        raise TypeError(
            "images must be PIL images, numpy arrays, torch tensors or URL/path/base64 strings (a list, or a list "
            f"per sample), got {type(images).__name__}"
        )

    def _prepare_image_like_inputs(self, images: ImageInput, *args, **kwargs) -> list["PIL.Image.Image"]:
        # Both backends start from the decoded PIL image: its mode decides how the original resamples it.
        images = self.fetch_images(images)
        try:
            images = self._prepare_images_structure(images)
        except ValueError:
            shapes = [getattr(image, "shape", None) for image in (images if isinstance(images, list) else [images])]
            raise ValueError(
                "images are PIL images, paths, URLs, or arrays / tensors of shape (height, width, channels) or "
                f"(channels, height, width), one per image or in (nested) lists; got arrays of shapes {shapes}"
            ) from None
        return [decoded_image(image, index) for index, image in enumerate(images)]

    def best_resolution(
        self, image_size: tuple[int, int], image_grid_pinpoints: list[list[int]] | None = None
    ) -> tuple[int, int]:
        """(height, width) of the any-resolution grid chosen for an image of (height, width)."""
        return select_best_resolution(tuple(image_size), image_grid_pinpoints or self.image_grid_pinpoints)

    def get_num_image_views(self, image_size: tuple[int, int], **kwargs: Unpack[XGenMMImageProcessorKwargs]) -> int:
        """Number of views (global view + grid crops) the processor makes for an image of (height, width); takes the
        same overrides as `__call__` (`anyres`, `image_grid_pinpoints`, `size`)."""
        if not kwargs.get("anyres", self.anyres):
            return 1
        size = kwargs.get("size") or self.size
        size = size if isinstance(size, SizeDict) else SizeDict(**size)
        best_height, best_width = self.best_resolution(image_size, kwargs.get("image_grid_pinpoints"))
        return 1 + (best_height // size.height) * (best_width // size.width)

    @staticmethod
    def check_grid(size: SizeDict, anyres: bool, image_grid_pinpoints: list[list[int]]) -> None:
        """Refuses any-resolution grids that are not whole multiples of the view size (their crops would not tile the
        resized image: views cut short, or parts of the image in no view)."""
        if not anyres:
            return
        wrong = [
            list(pinpoint)
            for pinpoint in image_grid_pinpoints
            if len(pinpoint) != 2
            or any(side <= 0 or side % view for side, view in zip(pinpoint, (size.height, size.width)))
        ]
        if wrong or not image_grid_pinpoints:
            raise ValueError(
                f"image_grid_pinpoints must be (height, width) pairs that are positive multiples of the view size "
                f"(size: height {size.height}, width {size.width}); got {wrong or image_grid_pinpoints}"
            )

    def get_max_num_image_views(self, **kwargs: Unpack[XGenMMImageProcessorKwargs]) -> int:
        """The most views any image can get (global view + the largest grid of `image_grid_pinpoints`): the width of
        every `pixel_values` row, so that rows from separate calls concatenate (pipelines, TRL, serving engines)."""
        if not kwargs.get("anyres", self.anyres):
            return 1
        size = kwargs.get("size") or self.size
        size = size if isinstance(size, SizeDict) else SizeDict(**size)
        pinpoints = kwargs.get("image_grid_pinpoints") or self.image_grid_pinpoints
        return 1 + max((height // size.height) * (width // size.width) for height, width in pinpoints)

    def to_dict(self):
        output = super().to_dict()
        # `register_for_auto_class` records one class; a Hub folder should offer both backends.
        if "AutoImageProcessor" in (output.get("auto_map") or {}):
            module = self.__class__.__module__.split(".")[-1]
            output["auto_map"] = {
                **output["auto_map"],
                "AutoImageProcessor": {
                    "pil": f"{module}.XGenMMImageProcessorPil",
                    "torchvision": f"{module}.XGenMMImageProcessor",
                },
            }
        return output


class XGenMMImageProcessorPil(XGenMMImageProcessingMixin, PilBackend):
    r"""
    xGen-MM image processor, PIL backend: reproduces the released `Blip3ImageProcessor` bit for bit.

    Every image becomes views of `size`:
    - `anyres=True`: the image squash-resized to `size` in its own mode, then the row-major `size` crops of the
      image resized with its aspect ratio kept (free side rounded up) to the best grid of `image_grid_pinpoints`
      (`select_best_resolution`) and pasted centred on a black RGB canvas;
    - `anyres=False`: the squash-resized view only.
    Resizing uses `resample` (bicubic) in the image's own mode, so Pillow resamples RGBA/LA with premultiplied alpha,
    P and 1 with nearest neighbour; pasting drops alpha and converts to RGB; every view is converted to RGB, divided
    by 255 and normalised with mean = std = 0.5, in float32, in that order.

    Returns `pixel_values` `(images, max_views, 3, height, width)`: the views of each image in its row (as many as
    `get_num_image_views`), zero views after them up to the most any image can get (`get_max_num_image_views`, 5 for
    the released grid), and `image_sizes` `(images, 2)` (original height, width).
    """

    def _preprocess(
        self,
        images: list["PIL.Image.Image"],
        size: SizeDict,
        anyres: bool,
        image_grid_pinpoints: list[list[int]],
        resample: PILImageResampling,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        return_tensors: str | TensorType | None,
        **kwargs,
    ) -> BatchFeature:
        self.check_grid(size, anyres, image_grid_pinpoints)
        # Every view is uint8 RGB, so rescaling and normalising map each (channel, level) to one value: the library's
        # own ops applied once to the 256 levels of each channel give a table, and the views are looked up in it,
        # straight into their place in the output. The same float32 values as applying the ops to every view.
        table = np.arange(256, dtype=np.uint8)[None, None].repeat(3, axis=0)  # (channels, 1, levels)
        if do_rescale:
            table = self.rescale(table, rescale_factor)
        if do_normalize:
            table = self.normalize(table, image_mean, image_std)
        table = table[:, 0]
        width = self.get_max_num_image_views(size=size, anyres=anyres, image_grid_pinpoints=image_grid_pinpoints)
        pixel_values = np.zeros((len(images), width, 3, size.height, size.width), table.dtype)

        def fill_row(index: int) -> None:
            for view_index, view in enumerate(
                self._image_views(images[index], size, anyres, image_grid_pinpoints, resample)
            ):
                for channel, levels in enumerate(view):
                    np.take(table[channel], levels, out=pixel_values[index, view_index, channel])

        # Pillow's resizing and numpy's lookups release the GIL: images are processed on torch's intra-op threads
        # (one in DataLoader workers, which set it so).
        threads = min(len(images), torch.get_num_threads())
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fill_row, range(len(images))))
        else:
            for index in range(len(images)):
                fill_row(index)
        image_sizes = [[image.height, image.width] for image in images]
        return BatchFeature(
            data={"pixel_values": pixel_values, "image_sizes": image_sizes}, tensor_type=return_tensors
        )

    def _image_views(
        self,
        image: "PIL.Image.Image",
        size: SizeDict,
        anyres: bool,
        image_grid_pinpoints: list[list[int]],
        resample: PILImageResampling,
    ) -> list[np.ndarray]:
        """The released pipeline, by hand: no library op resizes in the image's own mode and pastes onto a canvas."""
        global_view = image.resize((size.width, size.height), resample).convert("RGB")
        views = [_channel_planes(global_view)]
        if anyres:
            best_height, best_width = self.best_resolution((image.height, image.width), image_grid_pinpoints)
            fit_height, fit_width = fitted_size((image.height, image.width), (best_height, best_width))
            canvas = PIL.Image.new("RGB", (best_width, best_height))
            offset = ((best_width - fit_width) // 2, (best_height - fit_height) // 2)
            canvas.paste(image.resize((fit_width, fit_height), resample), offset)
            views += divide_to_patches(_channel_planes(canvas), (size.height, size.width))
        return views


class XGenMMImageProcessor(XGenMMImageProcessingMixin, TorchvisionBackend):
    r"""
    xGen-MM image processor, torchvision backend: the views of [`XGenMMImageProcessorPil`] (see there) computed on
    uint8 tensors, each normalised as it is written into the output (pass `device=` to run on a GPU).

    It follows Pillow's resampling: bicubic through torchvision's antialiased uint8 kernels with Pillow's order of the
    two passes, premultiplied alpha for RGBA and LA images, and Pillow's exact nearest-neighbour indices for P and 1
    images. Other modes (CMYK, I;16, I, F, YCbCr, ...) are converted to RGB before resizing instead of after.

    Its views differ from the PIL backend's by a few uint8 levels on a small fraction of the values (the README's
    "Image processing backends" gives the measured bounds per image mode).

    Returns `pixel_values` `(images, max_views, 3, height, width)` (one row per image, zero views after its own) and
    `image_sizes` `(images, 2)` (original height, width), as [`XGenMMImageProcessorPil`].
    """

    def _preprocess(
        self,
        images: list["PIL.Image.Image"],
        size: SizeDict,
        anyres: bool,
        image_grid_pinpoints: list[list[int]],
        resample: PILImageResampling,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        return_tensors: str | TensorType | None,
        device: "torch.device | str | None" = None,
        **kwargs,
    ) -> BatchFeature:
        self.check_grid(size, anyres, image_grid_pinpoints)
        prepared = [self._image_to_tensor(image, resample, device) for image in images]
        counts = [self.get_num_image_views((image.height, image.width), size=size, anyres=anyres,
                                           image_grid_pinpoints=image_grid_pinpoints) for image in images]  # fmt: skip
        width = self.get_max_num_image_views(size=size, anyres=anyres, image_grid_pinpoints=image_grid_pinpoints)
        # Views are written as they are cut, converted to float32 on the way, into their place in the output.
        shape = (len(images), width, 3, size.height, size.width)
        dtype = torch.float32 if do_rescale or do_normalize else torch.uint8
        device = prepared[0][0].device
        if device.type == "cpu":
            # numpy's allocation: its pages fault in at half the cost of torch's on first write (measured).
            pixel_values = torch.from_numpy(np.empty(shape, np.float32 if dtype == torch.float32 else np.uint8))
        else:
            pixel_values = torch.empty(shape, dtype=dtype, device=device)
        mean, std = image_mean, image_std
        if do_rescale and do_normalize:  # rescaling folded into the normalisation, as the library fuses them
            mean = [value / rescale_factor for value in image_mean]
            std = [value / rescale_factor for value in image_std]
        # torchvision's normalize subtracts the mean, then divides by the std, in float32: here the subtraction is
        # done as the uint8 views are written, and each view is divided right after, while it is in the cache.
        normalization = None
        if do_normalize:
            normalization = (_channels(mean, device), _channels(std, device), None)
        elif do_rescale:
            normalization = (_channels(0.0, device), None, rescale_factor)
        # Images of one size and mode are resized together, as one batch (one kernel call per size on a GPU).
        batches: dict[tuple, list[int]] = {}
        for index, (pixels, interpolation) in enumerate(prepared):
            batches.setdefault((tuple(pixels.shape), interpolation), []).append(index)
        for (_, interpolation), indices in batches.items():
            # Stacked channels-last, as each image comes: torchvision's fast uint8 kernels need that memory format.
            if len(indices) == 1:
                pixels = prepared[indices[0]][0][None]
            else:
                pixels = torch.stack([prepared[index][0].permute(1, 2, 0) for index in indices]).permute(0, 3, 1, 2)
            views = self._views(pixels, interpolation, size, anyres, image_grid_pinpoints)
            for batch_index, index in enumerate(indices):
                for view_index, parts in enumerate(views):
                    _write_view(pixel_values[index, view_index], parts, batch_index, normalization)
        for index, count in enumerate(counts):
            pixel_values[index, count:] = 0
        image_sizes = [[image.height, image.width] for image in images]
        return BatchFeature(
            data={"pixel_values": pixel_values, "image_sizes": image_sizes}, tensor_type=return_tensors
        )

    @staticmethod
    def _image_to_tensor(
        image: "PIL.Image.Image", resample: PILImageResampling, device: "torch.device | str | None"
    ) -> tuple["torch.Tensor", "tvF.InterpolationMode"]:
        """uint8 `(3, height, width)`, or `(4, ...)` RGBA with premultiplied colours for images with alpha, and the
        interpolation Pillow would use for the image's mode."""
        interpolation = pil_torch_interpolation_mapping[resample]
        if image.mode in ("P", "1"):
            # Pillow resamples palette and bilevel images with nearest neighbour whatever filter is asked for.
            image, interpolation = image.convert("RGB"), tvF.InterpolationMode.NEAREST
        elif image.mode in ("RGBA", "LA"):
            # Pillow resizes these with premultiplied colours; its own conversion premultiplies with its rounding.
            image = image.convert("RGBA").convert("RGBa")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).to(device)
        return pixels, interpolation

    def _resize(self, pixels: "torch.Tensor", height: int, width: int, interpolation) -> "torch.Tensor":
        """Resizes `(..., channels, height, width)` like Pillow: its vertical pass comes first exactly when the image
        shrinks vertically and `2 * (new_width - width) > new_height - height` (measured on Pillow 13), so the uint8
        rounding between the two passes matches."""
        old_height, old_width = pixels.shape[-2:]
        if interpolation == tvF.InterpolationMode.NEAREST:
            rows = _pillow_nearest_indices(old_height, height, pixels.device)
            columns = _pillow_nearest_indices(old_width, width, pixels.device)
            return pixels.index_select(-2, rows).index_select(-1, columns)
        if height < old_height and 2 * (width - old_width) > height - old_height:
            pixels = self.resize(pixels, SizeDict(height=height, width=old_width), resample=interpolation)
        resized = self.resize(pixels, SizeDict(height=height, width=width), resample=interpolation)
        return _unpremultiply(resized) if resized.shape[-3] == 4 else resized

    def _views(
        self,
        pixels: "torch.Tensor",
        interpolation,
        size: SizeDict,
        anyres: bool,
        image_grid_pinpoints: list[list[int]],
    ) -> list[list[tuple]]:
        """The views of uint8 images `(images, channels, height, width)` of one size, the global view then the grid
        crops row-major. A view is a list of parts `(source, rows, columns, view_rows, view_columns)`: the block
        `source[:, :, rows, columns]` of the resized images goes to `view[:, view_rows, view_columns]`; a part whose
        source is None is black padding over the whole view, written first."""
        whole = (slice(0, size.height), slice(0, size.width))
        views = [[(self._resize(pixels, size.height, size.width, interpolation), *whole, *whole)]]
        if not anyres:
            return views
        image_size = tuple(pixels.shape[-2:])
        best_height, best_width = self.best_resolution(image_size, image_grid_pinpoints)
        fit_height, fit_width = fitted_size(image_size, (best_height, best_width))
        resized = self._resize(pixels, fit_height, fit_width, interpolation)
        # The resized images, centred on a black canvas of the grid's size, cut into crops: each crop copies the part
        # of the images it covers (no canvas is made).
        top, left = (best_height - fit_height) // 2, (best_width - fit_width) // 2
        columns = best_width // size.width
        for crop in range((best_height // size.height) * columns):
            crop_top, crop_left = (crop // columns) * size.height, (crop % columns) * size.width
            rows = _overlap(top, fit_height, crop_top, size.height)
            cols = _overlap(left, fit_width, crop_left, size.width)
            parts = [] if (rows, cols) == whole else [(None, *whole, *whole)]
            if rows[0].stop > rows[0].start and cols[0].stop > cols[0].start:
                parts.append((resized, rows[0], cols[0], rows[1], cols[1]))
            views.append(parts)
        return views


def _overlap(start: int, length: int, window_start: int, window_length: int) -> tuple[slice, slice]:
    """Where `[start, start + length)` meets `[window_start, window_start + window_length)`: as a slice from `start`,
    and as a slice from `window_start`."""
    first, last = max(start, window_start), min(start + length, window_start + window_length)
    last = max(first, last)
    return slice(first - start, last - start), slice(first - window_start, last - window_start)


def _channels(values, device) -> "torch.Tensor":
    """float32 `(3, 1, 1)` of one value per channel (or one for all), as torchvision's normalize makes them."""
    return torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1, 1, 1).expand(3, 1, 1)


def _write_view(view: "torch.Tensor", parts: list[tuple], image: int, normalization: tuple | None) -> None:
    """Writes one view (`_views`) of image `image` of its batch into `view`: uint8 as it is, or float32 less an offset
    per channel, then divided by a std per channel or multiplied by a rescale factor (`normalization`; black is 0)."""
    for pixels, rows, columns, view_rows, view_columns in parts:
        target = view[:, view_rows, view_columns]
        if normalization is None:
            target.zero_() if pixels is None else target.copy_(pixels[image, :, rows, columns])
        elif pixels is None:
            target.copy_((-normalization[0]).expand_as(target))
        else:
            torch.sub(pixels[image, :, rows, columns], normalization[0], out=target)
    if normalization is not None:
        _, std, rescale_factor = normalization
        view.div_(std) if std is not None else view.mul_(rescale_factor)


def _channel_planes(image: "PIL.Image.Image") -> np.ndarray:
    """uint8 `(3, height, width)` of an RGB image, each channel a contiguous plane (Pillow splits the bands; reading
    the interleaved pixels channel by channel would be strided, and half as fast to look up)."""
    return np.stack([np.asarray(band) for band in image.split()])


def _pillow_nearest_indices(old_size: int, new_size: int, device) -> "torch.Tensor":
    """Source index of each output pixel of Pillow's nearest-neighbour resize: it walks the output adding
    `old_size / new_size` in double precision from half a step, then truncates. torchvision's float32 positions pick
    the neighbouring pixel on some rows and columns."""
    step = old_size / new_size
    increments = np.full(new_size, step)
    increments[0] = step * 0.5
    return torch.from_numpy(np.add.accumulate(increments).astype(np.int64)).to(device)


def _unpremultiply(pixels: "torch.Tensor") -> "torch.Tensor":
    """RGB of premultiplied uint8 RGBA with Pillow's integer rule (colour * 255 // alpha, unchanged where alpha is 0
    or 255); the alpha itself is dropped, as pasting and `convert("RGB")` do in the original."""
    colour, alpha = pixels[..., :3, :, :].int(), pixels[..., 3:, :, :].int()
    restored = torch.clamp(colour * 255 // alpha.clamp(min=1), max=255)
    keep = (alpha == 0) | (alpha == 255)
    return torch.where(keep, colour, restored).to(torch.uint8)


__all__ = ["XGenMMImageProcessor", "XGenMMImageProcessorPil"]
