# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Images per second of the two xGen-MM image processor backends on mixed-size RGB images (released settings: 384-px
views, any-resolution grids), after checking that their outputs agree within the documented tolerance.

    python -m benchmarks.image_processing [--repeats 5] [--threads 1 2]
"""

import argparse
import time

import numpy as np
import torch
from PIL import Image

from xgenmm_processing import XGenMMImageProcessor, XGenMMImageProcessorPil


# (width, height): photos, screenshots, documents, panoramas, thumbnails
SIZES = [(640, 480), (480, 640), (1024, 768), (1920, 1080), (300, 1000), (1500, 200), (384, 384), (800, 600),
         (2000, 1500), (50, 50), (1280, 720), (720, 1280)]  # fmt: skip
TOLERANCE_LEVELS = 2  # documented bound for RGB images, in uint8 levels of a view


def mixed_images(seed: int = 0) -> list[Image.Image]:
    """Smooth gradients with noise and sharp blocks, one image per size."""
    rng = np.random.default_rng(seed)
    images = []
    for width, height in SIZES:
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
        pixels = pixels + rng.integers(-20, 21, pixels.shape)
        pixels[height // 3 : height // 2, width // 4 : width // 2] = rng.integers(0, 256, 3)
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return images


def images_per_second(processor, images: list[Image.Image], repeats: int) -> float:
    processor(images[:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        processor(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def checked_agreement(pil, fast, images: list[Image.Image]) -> tuple[int, float]:
    """The number of views the images make and the largest difference between the backends' views in uint8 levels;
    raises where it is over the documented bound."""
    reference = pil(images, return_tensors="pt")["pixel_values"]
    difference = (fast(images, return_tensors="pt")["pixel_values"] - reference).abs().max().item() * 255 / 2
    if difference > TOLERANCE_LEVELS + 1e-3:
        raise SystemExit(f"torchvision backend differs by {difference:.2f} levels, more than {TOLERANCE_LEVELS}")
    return sum(pil.get_num_image_views((image.height, image.width)) for image in images), difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the images; the best one counts")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    args = parser.parse_args()

    images = mixed_images()
    pil, fast = XGenMMImageProcessorPil(), XGenMMImageProcessor()
    views, difference = checked_agreement(pil, fast, images)

    print(f"{len(images)} RGB images {SIZES[0]}..{SIZES[-1]} -> {views} views of 384x384")
    print(f"outputs agree: max |torchvision - pil| = {difference:.2f} uint8 levels (bound {TOLERANCE_LEVELS})\n")
    baseline = images_per_second(pil, images, args.repeats)
    rows = [("pil", "-", baseline)]
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        rows.append(("torchvision", str(threads), images_per_second(fast, images, args.repeats)))
    print(f"{'backend':<12} {'torch threads':>13} {'images/s':>9} {'vs pil':>7}")
    for backend, threads, rate in rows:
        print(f"{backend:<12} {threads:>13} {rate:>9.1f} {rate / baseline:>6.2f}x")


if __name__ == "__main__":
    main()
