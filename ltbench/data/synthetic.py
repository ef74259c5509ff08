"""`synthetic-lt`: a procedurally drawn 10-class image set that needs no download.

Every class has its own shape or texture (disc, square, triangle, plus, ring, stripes, checker,
hourglass, dots, crescent: no look-alike pairs) and its own hue: the ten hues are 36 degrees apart
on the colour wheel and vary by at most +-10 degrees within a class. Classes next to each other in
size order never have neighbouring hues: class c gets hue (3c mod 10) * 36 degrees, so its hue
neighbours are classes c-3 and c+3 (mod 10). (With the hues in class order, short long-tailed runs
merged runs of adjacent mid-sized classes into their larger hue neighbour in some seeds only.)
Within a class, position, size, a small rotation, stroke or period, the colour's saturation
(0.05-1: some images are nearly grey), its brightness, the grey level of the background and the
pixel noise vary, so images range from obvious to hard. Each image is drawn on a 32 x 32 grid and
shrunk to 16 x 16 by averaging 2 x 2 blocks: a quarter of the pixels keeps a small model's epoch
cheap, so that the smoke preset can afford enough steps for a stable result on 2 CPU cores.

Trained on the balanced set, the smoke preset's half-width ResNet-32 learns every class; what
makes the long-tailed versions hard is the number of training images (at rho=100 the last classes
keep 10-27 of 1000). Training crops pad by 2 pixels, CIFAR's 4 on 32 scaled to 16
(`DatasetBundle.crop_padding`). The measured figures (balanced control, the long-tail signature
of plain cross-entropy, the spread over seeds) are in BENCHMARKS.md, "The offline demo".

The images are the same on every run and every machine: the random numbers come from numpy's
PCG64 with fixed integer seeds, and the drawing uses only + - * /, sqrt, floor, abs, min, max and
clip on float32 arrays (IEEE operations that are correctly rounded everywhere); there is no
sin/exp/log, whose last bit may differ between math libraries (the hue becomes RGB through the
piecewise-linear HSV formula, and rotations come from a tangent, not an angle).
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = (
    "red-disc",
    "lime-square",
    "azure-triangle",
    "pink-plus",
    "yellow-ring",
    "cyan-stripes",
    "purple-checker",
    "orange-hourglass",
    "green-dots",
    "blue-crescent",
)
# class c's hue in tenths of a turn: 3c mod 10 (see the module docstring)
_HUE_INDEX = tuple(3 * c % 10 for c in range(10))
NUM_CLASSES = len(CLASS_NAMES)
DRAW_SIZE = 32  # the shapes are drawn on a 32 x 32 grid ...
IMAGE_SIZE = 16  # ... and each 2 x 2 block averaged: a 16 x 16 image (antialiased)
GENERATOR_SEED = 20240612  # fixed: the subset seed only picks which images form the long tail
DEFAULT_TRAIN_PER_CLASS = 1000
DEFAULT_TEST_PER_CLASS = 300  # a class's test error in 1/3-point steps (binomial s.e. <= 2.9)
# per-channel statistics of the training images (n_max=1000), for normalisation
MEAN = (0.5123, 0.5092, 0.5077)
STD = (0.2311, 0.2323, 0.2309)

_SPLIT_IDS = {"train": 0, "test": 1}
_HUE_JITTER = 0.028  # +- 10 degrees (in turns) around the class hue; hues are 36 degrees apart
_SQRT3_2 = np.float32(0.8660254)  # sqrt(3) / 2, for the triangle's edges


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
    tri = np.abs(np.float32(2.0) * frac - np.float32(1.0))  # 1 at the period's ends, 0 mid-way
    return np.clip((tri - np.float32(0.5)) * period * np.float32(0.5) + np.float32(0.5), 0.0, 1.0)


def _hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Fully saturated RGB (n, 3, 1, 1) in [0, 1] for hues (n, 1, 1) in turns (any real number)."""
    h6 = (hue - np.floor(hue)) * np.float32(6.0)
    one, two = np.float32(1.0), np.float32(2.0)
    r = np.abs(h6 - np.float32(3.0)) - one
    g = two - np.abs(h6 - two)
    b = two - np.abs(h6 - np.float32(4.0))
    return np.clip(np.stack([r, g, b], axis=1), 0.0, 1.0)


def _draw_class(rng: np.random.Generator, cls: int, n: int) -> np.ndarray:
    """Coverage masks (n, 32, 32) in [0, 1] for n images of class `cls` (the drawing grid)."""
    grid = np.arange(DRAW_SIZE, dtype=np.float32) + np.float32(0.5)
    ys = grid.reshape(1, DRAW_SIZE, 1)
    xs = grid.reshape(1, 1, DRAW_SIZE)
    cx = _uniform(rng, n, 12.0, 20.0)
    cy = _uniform(rng, n, 12.0, 20.0)
    # a small random rotation without trigonometry: (c, s) from a tangent in [-0.25, 0.25]
    tan = _uniform(rng, n, -0.25, 0.25)
    c = np.float32(1.0) / np.sqrt(np.float32(1.0) + tan * tan)
    s = tan * c
    du, dv = xs - cx, ys - cy
    u = c * du + s * dv  # right
    v = c * dv - s * du  # down
    radius = np.sqrt(u * u + v * v)
    size = _uniform(rng, n, 5.0, 12.0)  # the shape's half-extent in pixels
    shape = CLASS_NAMES[cls].split("-", 1)[1]

    if shape == "disc":
        return _coverage(radius - size)
    if shape == "square":
        a = size * np.float32(0.85)
        return _coverage(np.maximum(np.abs(u), np.abs(v)) - a)
    if shape == "triangle":  # pointing up; the three edges' outward normals are unit vectors
        top = v + size * np.float32(0.1)  # centre the triangle's bounding box on (cx, cy)
        base = top - size * np.float32(0.5)
        side = _SQRT3_2 * np.abs(u) - np.float32(0.5) * top - size * np.float32(0.5)
        return _coverage(np.maximum(base, side))
    if shape == "plus":
        half_width = size * _uniform(rng, n, 0.25, 0.35)
        au, av = np.abs(u), np.abs(v)
        arm_h = np.maximum(au - size, av - half_width)
        arm_v = np.maximum(av - size, au - half_width)
        return _coverage(np.minimum(arm_h, arm_v))
    if shape == "ring":
        half_width = size * _uniform(rng, n, 0.15, 0.22)
        return _coverage(np.abs(radius - size * np.float32(0.8)) - half_width)
    if shape == "hourglass":  # two triangles meeting at the centre: |u| <= |v| * 0.8, |v| <= size
        au, av = np.abs(u), np.abs(v)
        return _coverage(np.maximum(au - av * np.float32(0.8), av - size))
    if shape == "crescent":  # a disc with an off-centre disc cut out of its upper right
        inner = size * np.float32(0.8)
        ou, ov = u - size * np.float32(0.45), v + size * np.float32(0.3)
        return _coverage(np.maximum(radius - size, inner - np.sqrt(ou * ou + ov * ov)))

    # textures seen through a round aperture
    aperture = _coverage(radius - size * np.float32(1.25))
    period = _uniform(rng, n, 5.0, 8.0)
    phase_u = _uniform(rng, n, 0.0, 1.0)
    phase_v = _uniform(rng, n, 0.0, 1.0)
    if shape == "stripes":  # horizontal
        texture = _square_wave(v / period + phase_v, period)
    elif shape == "checker":
        a = _square_wave(u / period + phase_u, period)
        b = _square_wave(v / period + phase_v, period)
        texture = np.abs(a - b)
    elif shape == "dots":
        fu = u / period + phase_u
        fv = v / period + phase_v
        pu = (fu - np.floor(fu) - np.float32(0.5)) * period
        pv = (fv - np.floor(fv) - np.float32(0.5)) * period
        texture = _coverage(np.sqrt(pu * pu + pv * pv) - period * np.float32(0.32))
    else:  # pragma: no cover - CLASS_NAMES and the branches above are kept in step
        raise AssertionError(shape)
    return texture * aperture


def _paint(rng: np.random.Generator, cls: int, mask: np.ndarray) -> np.ndarray:
    """Colour and noise: masks (n, 32, 32) -> float images (n, 3, 32, 32), about in [0, 1].

    The foreground has the class's hue (+-10 degrees), saturation 0.05-1 and value 0.5-1; the
    background is a grey level in [0.1, 0.9] with a faint random tint.
    """
    n = mask.shape[0]
    hue = np.float32(_HUE_INDEX[cls] / NUM_CLASSES) + _uniform(rng, n, -_HUE_JITTER, _HUE_JITTER)
    sat = _uniform(rng, n, 0.05, 1.0)[:, None]
    val = _uniform(rng, n, 0.5, 1.0)[:, None]
    fg = val * (np.float32(1.0) - sat + sat * _hue_to_rgb(hue))
    grey = _uniform(rng, n, 0.1, 0.9)[:, None]
    tint = (rng.random((n, 3, 1, 1), dtype=np.float32) - np.float32(0.5)) * np.float32(0.1)
    bg = grey + tint
    img = bg + (fg - bg) * mask[:, None]

    # roughly Gaussian pixel noise (sum of three uniforms), sd drawn per image in [0.02, 0.10]
    sd = rng.random((n, 1, 1, 1), dtype=np.float32) * np.float32(0.08) + np.float32(0.02)
    shape = (n, 3, DRAW_SIZE, DRAW_SIZE)
    noise = rng.random(shape, dtype=np.float32)
    noise += rng.random(shape, dtype=np.float32)
    noise += rng.random(shape, dtype=np.float32)
    return img + (noise - np.float32(1.5)) * (np.float32(2.0) * sd)


def _shrink(img: np.ndarray) -> np.ndarray:
    """(n, 3, 32, 32) -> (n, 3, 16, 16): the mean of each 2 x 2 block (sums of four, times 1/4)."""
    f = DRAW_SIZE // IMAGE_SIZE
    n = img.shape[0]
    blocks = img.reshape(n, 3, IMAGE_SIZE, f, IMAGE_SIZE, f)
    total = blocks[:, :, :, 0, :, 0] + blocks[:, :, :, 0, :, 1]
    total = total + blocks[:, :, :, 1, :, 0]
    total = total + blocks[:, :, :, 1, :, 1]
    return total * np.float32(0.25)


def generate(
    split: str, per_class: int, seed: int = GENERATOR_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `per_class` images of every class for `split` ("train" or "test").

    Returns uint8 images (N, 3, 16, 16) and int64 labels (N,), class-major (all of class 0 first).
    Each (seed, split, class) has its own random stream, so the splits never share an image.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    images = np.empty((NUM_CLASSES * per_class, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for cls in range(NUM_CLASSES):
        rng = np.random.Generator(np.random.PCG64([seed, _SPLIT_IDS[split], cls]))
        img = _shrink(_paint(rng, cls, _draw_class(rng, cls, per_class)))
        quantised = np.floor(np.clip(img, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5))
        images[cls * per_class : (cls + 1) * per_class] = quantised.astype(np.uint8)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), per_class)
    return images, labels
