"""SENSE forward model as operators (used by the learned models and the cine recon): ``A = M ∘ F ∘ S``.

The network calls, in ``forward``, the TorchScript-compatible torch instances of the maths written
once for numpy and torch (:mod:`cmrecon.recon.fft`, :mod:`cmrecon.recon.sense`), re-exported here:
:func:`fft2c`, :func:`ifft2c`, :func:`expand`, :func:`reduce`, :func:`masked`. The operators built
on them (:class:`FFT2c`, :class:`CoilExpand`, :class:`SamplingMask`, :func:`sense_operator`) compose
with ``@``, have the adjoint ``.H`` and scale with ``*`` (STYLE.md rule 6): adjointness is
property-tested and the data-consistency step checked against ``A.H(A(x) - y)``.

Axis convention (the model's I/O): images ``(B, 1, RO, PE)`` complex64, multi-coil images and
k-space ``(B, coils, RO, PE)`` complex64, sampling mask ``(B, 1, RO, PE)`` bool. The FFT is
centred and orthonormal over the last two axes (DC at index ``n // 2``).

References
----------
Pruessmann KP et al. SENSE: sensitivity encoding for fast MRI. MRM 1999;42:952-962.
Sriram A et al. End-to-end variational networks for accelerated MRI reconstruction.
MICCAI 2020 (fastMRI E2E-VarNet, whose expand/reduce and soft DC the PSIRNet cascades follow).
"""

from __future__ import annotations

from typing import Optional

import torch

from cmrecon.recon.fft import centred_fft
from cmrecon.recon.sense import expand, masked, reduce

__all__ = ["CoilExpand", "FFT2c", "LinearOp", "SamplingMask", "expand", "fft2c", "ifft2c",
           "masked", "reduce", "sense_operator"]

#: Centred orthonormal 2D FFT and its inverse over the last two axes (torch, TorchScript).
fft2c, ifft2c = centred_fft(torch)


class LinearOp:
    """Linear operator: call to apply, ``.H`` for the adjoint, ``@`` to compose, ``*`` to scale.

    Subclasses implement :meth:`forward` and :meth:`adjoint`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint operator."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def H(self) -> "LinearOp":  # noqa: N802 - the conventional name of the adjoint
        """The adjoint operator."""
        return _Adjoint(self)

    def __matmul__(self, other: "LinearOp") -> "LinearOp":
        if not isinstance(other, LinearOp):
            return NotImplemented
        return _Composition(self, other)

    def __mul__(self, scale: complex) -> "LinearOp":
        if isinstance(scale, LinearOp) or torch.is_tensor(scale):
            raise TypeError("`*` only scales an operator by a Python number; compose with `@`")
        return _Scaled(self, scale)

    __rmul__ = __mul__


class _Adjoint(LinearOp):
    def __init__(self, op: LinearOp):
        self.op = op

    def forward(self, x):
        return self.op.adjoint(x)

    def adjoint(self, y):
        return self.op.forward(y)

    @property
    def H(self) -> LinearOp:  # noqa: N802
        return self.op


class _Composition(LinearOp):
    def __init__(self, outer: LinearOp, inner: LinearOp):
        self.outer, self.inner = outer, inner

    def forward(self, x):
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))


class _Scaled(LinearOp):
    def __init__(self, op: LinearOp, scale: complex):
        self.op, self.scale = op, scale

    def forward(self, x):
        return self.op.forward(x) * self.scale

    def adjoint(self, y):
        return self.op.adjoint(y) * complex(self.scale).conjugate()


class FFT2c(LinearOp):
    """Centred orthonormal 2D FFT over the last two axes; unitary, so ``.H`` is its inverse."""

    def forward(self, x):
        return fft2c(x)

    def adjoint(self, y):
        return ifft2c(y)


class CoilExpand(LinearOp):
    """``(B, 1, RO, PE)`` image → ``(B, coils, RO, PE)`` coil images, ``S_c · x``.

    Parameters
    ----------
    sens_maps : torch.Tensor
        ``(B, coils, RO, PE)`` complex coil sensitivities.
    """

    def __init__(self, sens_maps: torch.Tensor):
        self.sens_maps = sens_maps

    def forward(self, x):
        return expand(x, self.sens_maps)

    def adjoint(self, y):
        return reduce(y, self.sens_maps)


class SamplingMask(LinearOp):
    """Projection onto sampled k-space locations (self-adjoint).

    Parameters
    ----------
    mask : torch.Tensor
        ``(B, 1, RO, PE)`` bool, True where sampled.
    """

    def __init__(self, mask: torch.Tensor):
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be bool, got {mask.dtype}")
        self.mask = mask

    def forward(self, x):
        return masked(x, self.mask)

    def adjoint(self, y):
        return masked(y, self.mask)


def sense_operator(sens_maps: torch.Tensor, mask: Optional[torch.Tensor] = None) -> LinearOp:
    """SENSE encoding ``A = M ∘ F ∘ S``: image ``(B, 1, RO, PE)`` → k-space ``(B, coils, RO, PE)``.

    Parameters
    ----------
    sens_maps : torch.Tensor
        ``(B, coils, RO, PE)`` complex coil sensitivities.
    mask : torch.Tensor, optional
        ``(B, 1, RO, PE)`` bool sampling mask; omitted means fully sampled.

    Returns
    -------
    LinearOp
        ``A`` with ``A.H = S^H ∘ F^H ∘ M`` (coil combination of the zero-filled inverse FFT).
    """
    op: LinearOp = FFT2c() @ CoilExpand(sens_maps)
    if mask is not None:
        op = SamplingMask(mask) @ op
    return op
