"""The one axis convention of cmrecon: arrays end in ``(coils, y, x)`` / ``(y, x)``.

Every array that recon, the models, the simulator's truth and the evaluation exchange follows it:

* **k-space** ``(…, coils, ky, kx)`` complex64: ``ky`` = phase-encode rows of the encoded matrix
  (encode step ``center_line`` lands on row ``ky // 2``), ``kx`` = readout samples (DC at
  ``kx // 2``). Leading axes (repeats, batch, time) come first.
* **images** ``(…, y, x)``: ``y`` = phase-encode rows, ``x`` = readout columns; coil images and
  coil maps ``(…, coils, y, x)`` on the same grid as the k-space they came from. This is the row
  order of an MRD image's data (``matrix_size = (x, y, 1)``, C order ``[y][x]``).
* **matrix sizes** stay in the MRD header's order ``(x, y)`` (``recon_matrix``, ``fov_mm``):
  they are header values, not array shapes; :func:`shape_yx` turns one into a shape.
* **units**: after noise prewhitening each coil has unit noise variance; unit-norm coil maps
  (``Σ_c |S_c|² = 1``) keep σ = 1, so combined images are in SNR units.

The one place that transposes is the PSIRNet adapter (:mod:`cmrecon.models.adapter`): the
published model was trained on ``(x, y)`` arrays (readout first).
"""

from __future__ import annotations

#: Axis of the receive coils in k-space and coil images.
COIL_AXIS = -3
#: Image / k-space axes ``(y, x)`` = ``(ky, kx)``.
IMAGE_AXES = (-2, -1)


def shape_yx(matrix_xy: tuple[int, int]) -> tuple[int, int]:
    """Array shape ``(y, x)`` of an MRD matrix size ``(x, y)``."""
    x, y = matrix_xy
    return int(y), int(x)


def centre_crop(images, shape: tuple[int, int]):
    """Centre-crop the last two axes of ``images`` to ``shape = (y, x)`` where they are larger.

    Parameters
    ----------
    images : (..., y, x) array (numpy or torch)
    shape : (y, x) target size; an axis already at most this size is left alone.

    Returns
    -------
    (..., min(y, shape[0]), min(x, shape[1])) view of ``images``; the centre sample ``n // 2``
    stays the centre sample.
    """
    ny, nx = images.shape[-2:]
    ty, tx = min(int(shape[0]), ny), min(int(shape[1]), nx)
    y0, x0 = ny // 2 - ty // 2, nx // 2 - tx // 2
    return images[..., y0:y0 + ty, x0:x0 + tx]
