"""Real photographed textures for demo data, line-image crops of them, and fractal noise.

Two sources: scikit-image's bundled texture photographs (brick, grass, gravel; always present, no
download), and Debian's `ufoai-textures` package when it is installed. That archive holds thousands of
game textures; only a hand-picked list of photo-like, industrial-looking surfaces (metal, concrete,
wood, stone, asphalt) is read from it, in an order chosen so that the first few are already varied.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.data.images import to_rgb8

UFOAI_TEXTURE_ARCHIVE = Path("/usr/share/games/ufoai/base/0textures.pk3")

SKIMAGE_TEXTURES = ("brick", "gravel", "grass")

# Members of the ufoai archive that look like a product surface, most distinct first. Tiled game art
# (walls with stripes, crates, street markings) and normal/specular maps are left out on purpose.
UFOAI_MEMBERS = (
    "textures/tex_material/metall005.png",
    "textures/tex_material/conc01.png",
    "textures/tex_material/wood013.png",
    "textures/tex_material/metal002.png",
    "textures/tex_nature/rock015.png",
    "textures/tex_streets/street001.png",
    "textures/tex_material/metall001.png",
    "textures/tex_material/conc02.png",
    "textures/tex_material/wood009.png",
    "textures/tex_material/metall013.png",
    "textures/tex_nature/stone001.png",
    "textures/tex_nature/sand.jpg",
    "textures/tex_material/metall015.png",
    "textures/tex_material/wood003.png",
    "textures/tex_nature/drymud.jpg",
    "textures/tex_nature/rock014.png",
    "textures/tex_material/metall020.png",
    "textures/tex_nature/soil001.jpg",
    "textures/tex_material/metall012.png",
    "textures/tex_material/wood015.png",
)


@dataclass(frozen=True)
class Texture:
    """A texture photograph: `name` doubles as the production-line name of images cut from it."""

    name: str
    source: str
    pixels: np.ndarray  # uint8 RGB [H, W, 3]


def load_skimage_textures() -> list[Texture]:
    """scikit-image's texture photographs, expanded from grey to RGB."""
    from skimage import data  # imported here: scikit-image is slow to import and only needed here

    return [
        Texture(name=name, source=f"scikit-image:{name}", pixels=to_rgb8(getattr(data, name)()))
        for name in SKIMAGE_TEXTURES
    ]


def load_archive_textures(
    archive: Path | None, limit: int, members: Sequence[str] = UFOAI_MEMBERS
) -> list[Texture]:
    """Up to `limit` textures from the ufoai archive, in `members` order; [] when it is absent.

    Members that are missing or fail to decode are passed over, so a different package version
    still yields textures.
    """
    if archive is None or limit <= 0 or not archive.is_file():
        return []
    textures: list[Texture] = []
    with zipfile.ZipFile(archive) as zipped:
        present = set(zipped.namelist())
        for member in members:
            if len(textures) == limit:
                break
            if member not in present:
                continue
            decoded = cv2.imdecode(np.frombuffer(zipped.read(member), np.uint8), cv2.IMREAD_COLOR)
            if decoded is None:
                continue
            name = Path(member).stem
            textures.append(Texture(name=name, source=f"ufoai-textures:{member}", pixels=to_rgb8(decoded)))
    return textures


def crop_texture(texture: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random `size` x `size` view of a texture, as a camera over a moving line would see it.

    The crop side follows the texture's own scale (at most 60 % of its shorter side, so crops of one
    texture differ) with ±15 % zoom jitter, then a random rotation by a multiple of 90°, a random flip
    and mild gain/offset jitter (lighting drift).
    """
    height, width = texture.shape[:2]
    shorter = min(height, width)
    side = min(shorter * 0.6, float(size)) * rng.uniform(0.85, 1.15)
    side = int(np.clip(round(side), 8, shorter))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = texture[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    crop = cv2.resize(crop, (size, size), interpolation=interpolation)
    crop = np.rot90(crop, k=int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-8.0, 8.0)
    return np.clip(crop.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)


def perlin_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Gradient (Perlin) noise on a `size` x `size` grid with `cells` lattice cells per side, ~[-1, 1]."""
    angles = rng.uniform(0.0, 2.0 * np.pi, (cells + 1, cells + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    coords = np.arange(size, dtype=np.float64) * cells / size
    cell = coords.astype(int)
    frac = coords - cell
    fy, fx = frac[:, None], frac[None, :]
    iy, ix = cell[:, None], cell[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        grad = gradients[iy + dy, ix + dx]
        return grad[..., 0] * (fx - dx) + grad[..., 1] * (fy - dy)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    wy, wx = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - wx) + corner(0, 1) * wx
    bottom = corner(1, 0) * (1 - wx) + corner(1, 1) * wx
    return (top * (1 - wy) + bottom * wy) * np.sqrt(2.0)


def fractal_noise(size: int, rng: np.random.Generator, base_cells: int = 4, octaves: int = 4) -> np.ndarray:
    """Sum of Perlin octaves (each twice as fine, half as strong), scaled to about [-1, 1]."""
    total = np.zeros((size, size))
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = min(base_cells * 2**octave, size)
        total += amplitude * perlin_noise(size, cells, rng)
        norm += amplitude
        amplitude *= 0.5
    return (total / norm).astype(np.float32)
