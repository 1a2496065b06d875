"""The benchmark's two pools of real surfaces: split A (for choosing) and split B (frozen, only reported).

Both come from Debian's `ufoai-textures` photographs, and neither shares a texture with the demo data
(`training.data.textures`: the scikit-image photos and `UFOAI_MEMBERS`), so nothing a default was tuned
on appears in either split. Each pool mixes periodic surfaces (woven fabric, tread plate, slats),
stochastic ones (rock, dirt, carpet, brushed or blasted metal) and structured ones (wood grain, sand
ripples). The two pools are disjoint; a test checks all three sets.
"""

from __future__ import annotations

from pathlib import Path

from training.data.textures import UFOAI_TEXTURE_ARCHIVE, Texture, load_archive_textures
from training.errors import UserError

# Split A: for choosing methods and defaults.
SPLIT_A = (
    "textures/tex_furniture/textil001.png",  # periodic: green woven fabric
    "textures/tex_material/metall009.jpg",  # periodic: tread plate
    "textures/tex_furniture/textil003.png",  # periodic: beige woven fabric
    "textures/tex_material/metall014.png",  # stochastic: worn steel
    "textures/tex_nature/rock010.png",  # stochastic: rock
    "textures/tex_nature/dirt001.png",  # stochastic: packed dirt
    "textures/tex_material/wood012.png",  # structured: wood grain
    "textures/tex_nature/desert006.png",  # structured: sand ripples
)

# Split B: frozen. Its numbers are reported, never used to choose anything.
SPLIT_B = (
    "textures/tex_furniture/textil002.png",  # periodic: blue woven fabric
    "textures/tex_material/metall007.png",  # periodic: diamond tread plate
    "textures/tex_material/metall011.jpg",  # periodic: slatted panel
    "textures/tex_material/metall016.png",  # stochastic: dark blasted steel
    "textures/tex_nature/rock008.png",  # stochastic: rock
    "textures/tex_furniture/jap_carpet001.png",  # stochastic: red carpet
    "textures/tex_material/wood011.png",  # structured: wood grain
    "textures/tex_nature/desert005.png",  # structured: wind ripples
)

SPLITS = {"a": SPLIT_A, "b": SPLIT_B}


def split_members(split: str) -> tuple[str, ...]:
    """The archive members of split `split` ("a" or "b", any case).

    Raises:
        UserError: another split name.
    """
    try:
        return SPLITS[split.lower()]
    except KeyError:
        raise UserError(f"--split must be a or b, not {split!r}") from None


def load_split_surfaces(split: str, archive: Path = UFOAI_TEXTURE_ARCHIVE) -> list[Texture]:
    """The surfaces of a split, decoded from the archive.

    Raises:
        UserError: the archive is missing, or one of the split's members is not in it (a different
            package version would silently change the benchmark).
    """
    members = split_members(split)
    if not archive.is_file():
        raise UserError(
            f"the benchmark's surfaces come from {archive}, which is missing: install the Debian package "
            "ufoai-textures (apt-get install ufoai-textures)"
        )
    textures = load_archive_textures(archive, limit=len(members), members=members)
    missing = sorted(set(members) - {t.source.split(":", 1)[1] for t in textures})
    if missing:
        raise UserError(f"{archive} lacks {', '.join(missing)}; the benchmark needs ufoai-textures 2.5")
    return textures
