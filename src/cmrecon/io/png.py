"""Write images a person can look at: single PNGs and labelled panels (opt-in, never implicit).

Grey levels map a window ``(lo, hi)`` linearly to 0..255; without a window the 1st-99th
percentile range of each tile is used. Error maps use a signed window centred on zero. Files are
written atomically (:mod:`cmrecon.io.atomic`); a failure is an ``OutputError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from cmrecon.io.atomic import atomic_path, make_folder

Window = tuple[float, float]


def to_uint8(image: np.ndarray, window: Window | None = None) -> np.ndarray:
    """Map a real 2D array ``(y, x)`` to uint8 through a window (percentile 1-99 when None)."""
    img = np.asarray(image)
    if np.iscomplexobj(img):
        img = np.abs(img)
    img = np.nan_to_num(img.astype(np.float64))
    if window is None:
        lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    else:
        lo, hi = window
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((img - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _write(path: str | Path, picture: Image.Image) -> Path:
    """Write ``picture`` as PNG at ``path`` (folders created), atomically; OutputError on failure."""
    path = Path(path)
    make_folder(path.parent)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def save_png(path: str | Path, image: np.ndarray, window: Window | None = None) -> Path:
    """Write one 2D array ``(y, x)`` as an 8-bit greyscale PNG; rows are image rows.

    Raises
    ------
    OutputError
        The file or its folder cannot be written (disk full, no permission...).
    """
    return _write(path, Image.fromarray(to_uint8(image, window), mode="L"))


def save_panel(path: str | Path, tiles: Sequence[tuple[str, np.ndarray, Window | None]],
               ncols: int | None = None, scale: int = 2) -> Path:
    """Write several 2D arrays side by side, each with its title above it.

    Parameters
    ----------
    tiles : sequence of ``(title, image (y, x), window or None)``.
    ncols : tiles per row (all in one row when None).
    scale : integer up-scaling of each tile (nearest neighbour) for legibility.

    Raises
    ------
    ValueError
        No tiles.
    OutputError
        The file or its folder cannot be written (disk full, no permission...).
    """
    if not tiles:
        raise ValueError("save_panel needs at least one tile")
    ncols = ncols or len(tiles)
    nrows = -(-len(tiles) // ncols)
    h = max(t[1].shape[0] for t in tiles) * scale
    w = max(t[1].shape[1] for t in tiles) * scale
    title_h = 14
    canvas = Image.new("L", (ncols * w, nrows * (h + title_h)), color=0)
    draw = ImageDraw.Draw(canvas)
    for i, (title, image, window) in enumerate(tiles):
        r, c = divmod(i, ncols)
        tile = Image.fromarray(to_uint8(image, window), mode="L")
        tile = tile.resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
        canvas.paste(tile, (c * w, r * (h + title_h) + title_h))
        draw.text((c * w + 2, r * (h + title_h) + 1), title, fill=255)
    return _write(path, canvas)
