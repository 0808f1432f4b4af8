"""Offline stand-in for transformers' `utils/fetch_hub_objects_for_ci.py`, written for this project (the upstream
module is not part of transformers' source distribution).

Upstream, CI pre-downloads the test media of `hf-internal-testing` and `url_to_local_path` maps each URL to that
file. transformers' test mixins (fetched by `tests/upstream_tests.py`) import `url_to_local_path` from a top-level
module of this name; `tests/test_transformers_mixins.py` puts this folder first on `sys.path` and imports this module
before them, so it is the one they get. Here each image URL maps to a picture written locally once, at the size of the
file it stands for (640x480, like the COCO samples the mixins use), so no test media are downloaded. Video and audio
URLs are returned unchanged: the XGen-MM processor has no video or audio component, and the mixins skip those tests
for such processors.
"""

import hashlib
import os
import tempfile

import numpy as np
from PIL import Image


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER = os.path.join(tempfile.gettempdir(), "xgenmm-transformers-mixin-media")


def url_to_local_path(url, return_url_if_not_found=True):
    name = url.rsplit("/", 1)[-1]
    if not name.lower().endswith(IMAGE_SUFFIXES):
        if return_url_if_not_found:
            return url
        raise FileNotFoundError(f"no local stand-in for {url}: only images ({', '.join(IMAGE_SUFFIXES)}) have one")
    os.makedirs(FOLDER, exist_ok=True)
    path = os.path.join(FOLDER, hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + name)
    if not os.path.exists(path):
        seed = int.from_bytes(hashlib.sha256(url.encode()).digest()[:4], "little")
        pixels = np.random.default_rng(seed).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        partial = f"{path}.{os.getpid()}.tmp"
        Image.fromarray(pixels).save(partial, format="PNG" if name.lower().endswith(".png") else "JPEG")
        os.replace(partial, path)
    return path
