"""`synthetic-lt`: a procedurally drawn 10-class image set that needs no download.

Every class is a shape or texture: five pairs of look-alike classes (disc/ring, square/frame,
horizontal/vertical stripes, plus/x-cross, checker/dots). Within a class, position, size,
orientation, stroke width, colours, contrast and pixel noise vary, and a random distractor blob
is pasted on half of the images, so a small CNN needs a few hundred examples per class to learn
a class well. The first member of each look-alike pair has a low class index and the second a
high one, so under the exp profile every tail class has a head class it is easily confused with.

The images are the same on every run and every machine: the random numbers come from numpy's
PCG64 with fixed integer seeds, and the drawing uses only + - * /, sqrt, floor, abs, min, max and
clip on float32 arrays (IEEE operations that are correctly rounded everywhere); there is no
sin/exp/log, whose last bit may differ between math libraries.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = (
    "disc",
    "square",
    "stripes-h",
    "plus",
    "checker",
    "ring",
    "frame",
    "stripes-v",
    "x-cross",
    "dots",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 32
GENERATOR_SEED = 20230917  # fixed: the subset seed only picks which images form the long tail
DEFAULT_TRAIN_PER_CLASS = 500
DEFAULT_TEST_PER_CLASS = 100
# per-channel statistics of the training images (n_max=500), for normalisation
MEAN = (0.4998, 0.4979, 0.5053)
STD = (0.2834, 0.2841, 0.2842)

_SPLIT_IDS = {"train": 0, "test": 1}
_INV_SQRT2 = np.float32(0.70710677)


def _uniform(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """n per-sample values in [low, high), shaped (n, 1, 1) to broadcast over the image grid."""
    u = rng.random(n, dtype=np.float32)
    return (np.float32(low) + u * np.float32(high - low)).reshape(n, 1, 1)


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Pixel coverage from a signed distance in pixels (negative inside): a 1-pixel soft edge."""
    return np.clip(np.float32(0.5) - signed_distance, 0.0, 1.0)


def _square_wave(t: np.ndarray, period: np.ndarray) -> np.ndarray:
    """1 on half of each period and 0 on the other, with soft edges about one pixel wide."""
    frac = t - np.floor(t)
    tri = np.abs(
        np.float32(2.0) * frac - np.float32(1.0)
    )  # 1 at the period's ends, 0 in the middle
    return np.clip((tri - np.float32(0.5)) * period * np.float32(0.5) + np.float32(0.5), 0.0, 1.0)


def _draw_class(rng: np.random.Generator, cls: int, n: int) -> np.ndarray:
    """Coverage masks (n, 32, 32) in [0, 1] for n images of class `cls`."""
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + np.float32(0.5)
    ys = grid.reshape(1, IMAGE_SIZE, 1)
    xs = grid.reshape(1, 1, IMAGE_SIZE)
    cx = _uniform(rng, n, 11.0, 21.0)
    cy = _uniform(rng, n, 11.0, 21.0)
    # a small random rotation without trigonometry: (c, s) from a tangent in [-0.3, 0.3]
    tan = _uniform(rng, n, -0.3, 0.3)
    c = np.float32(1.0) / np.sqrt(np.float32(1.0) + tan * tan)
    s = tan * c
    du, dv = xs - cx, ys - cy
    u = c * du + s * dv
    v = c * dv - s * du
    radius = np.sqrt(u * u + v * v)
    name = CLASS_NAMES[cls]

    if name in ("disc", "ring"):
        r = _uniform(rng, n, 6.0, 11.0)
        if name == "disc":
            return _coverage(radius - r)
        # thick rings look like discs: the pair overlaps at the thick end
        half_width = r * _uniform(rng, n, 0.12, 0.4)
        return _coverage(np.abs(radius - r) - half_width)
    if name in ("square", "frame"):
        a = _uniform(rng, n, 5.0, 10.0)
        box = np.maximum(np.abs(u), np.abs(v))
        if name == "square":
            return _coverage(box - a)
        half_width = a * _uniform(rng, n, 0.12, 0.4)
        return _coverage(np.abs(box - a) - half_width)
    if name in ("plus", "x-cross"):
        if name == "x-cross":
            u, v = (u + v) * _INV_SQRT2, (v - u) * _INV_SQRT2
        arm = _uniform(rng, n, 7.0, 12.0)
        half_width = _uniform(rng, n, 1.2, 3.0)
        au, av = np.abs(u), np.abs(v)
        d = np.minimum(np.maximum(au - half_width, av - arm), np.maximum(av - half_width, au - arm))
        return _coverage(d)

    # textures seen through a round aperture
    aperture = _coverage(radius - _uniform(rng, n, 9.0, 15.0))
    period = _uniform(rng, n, 4.0, 8.0)
    phase_u = _uniform(rng, n, 0.0, 1.0)
    phase_v = _uniform(rng, n, 0.0, 1.0)
    if name == "stripes-h":
        texture = _square_wave(v / period + phase_v, period)
    elif name == "stripes-v":
        texture = _square_wave(u / period + phase_u, period)
    elif name == "checker":
        a = _square_wave(u / period + phase_u, period)
        b = _square_wave(v / period + phase_v, period)
        texture = np.abs(a - b)
    elif name == "dots":
        fu = u / period + phase_u
        fv = v / period + phase_v
        pu = (fu - np.floor(fu) - np.float32(0.5)) * period
        pv = (fv - np.floor(fv) - np.float32(0.5)) * period
        dot_r = period * _uniform(rng, n, 0.22, 0.38)
        texture = _coverage(np.sqrt(pu * pu + pv * pv) - dot_r)
    else:  # pragma: no cover - CLASS_NAMES and the branches above are kept in step
        raise AssertionError(name)
    return texture * aperture


def _paint(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Colour, distractor and noise: masks (n, 32, 32) -> float images (n, 3, 32, 32) in [0, 1]."""
    n = mask.shape[0]
    bg = rng.random((n, 3, 1, 1), dtype=np.float32)
    # the foreground differs from the background by 0.2 to 0.55 in every channel, away from it
    step = rng.random((n, 3, 1, 1), dtype=np.float32) * np.float32(0.35) + np.float32(0.2)
    fg = np.where(bg > np.float32(0.5), bg - step, bg + step)
    img = bg + (fg - bg) * mask[:, None]

    # a small blob of a third colour on about half of the images
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + np.float32(0.5)
    bx = _uniform(rng, n, 2.0, 30.0)
    by = _uniform(rng, n, 2.0, 30.0)
    br = _uniform(rng, n, 1.5, 4.0)
    dx = grid.reshape(1, 1, IMAGE_SIZE) - bx
    dy = grid.reshape(1, IMAGE_SIZE, 1) - by
    blob = _coverage(np.sqrt(dx * dx + dy * dy) - br)
    blob = blob * (rng.random((n, 1, 1), dtype=np.float32) < np.float32(0.5))
    blob_colour = rng.random((n, 3, 1, 1), dtype=np.float32)
    img = img + (blob_colour - img) * blob[:, None]

    # roughly Gaussian pixel noise (sum of three uniforms), sd drawn per image in [0.02, 0.12]
    sd = rng.random((n, 1, 1, 1), dtype=np.float32) * np.float32(0.10) + np.float32(0.02)
    shape = (n, 3, IMAGE_SIZE, IMAGE_SIZE)
    noise = rng.random(shape, dtype=np.float32)
    noise += rng.random(shape, dtype=np.float32)
    noise += rng.random(shape, dtype=np.float32)
    img = img + (noise - np.float32(1.5)) * (np.float32(2.0) * sd)
    return img


def generate(
    split: str, per_class: int, seed: int = GENERATOR_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `per_class` images of every class for `split` ("train" or "test").

    Returns uint8 images (N, 3, 32, 32) and int64 labels (N,), class-major (all of class 0 first).
    Each (seed, split, class) has its own random stream, so the splits never share an image.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    images = np.empty((NUM_CLASSES * per_class, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for cls in range(NUM_CLASSES):
        rng = np.random.Generator(np.random.PCG64([seed, _SPLIT_IDS[split], cls]))
        img = _paint(rng, _draw_class(rng, cls, per_class))
        quantised = np.floor(np.clip(img, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5))
        images[cls * per_class : (cls + 1) * per_class] = quantised.astype(np.uint8)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), per_class)
    return images, labels
