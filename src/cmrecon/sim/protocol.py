"""What the LGE and cine simulators' protocol parameters share: derived timing and geometry."""

from __future__ import annotations

import dataclasses
import json
from typing import Callable

__all__ = ["ScanProtocol"]


class ScanProtocol:
    """Mixin of a frozen parameter dataclass with ``matrix`` (readout, phase), ``fov_mm``,
    ``readout_oversampling``, ``bandwidth_hz_per_px`` and ``heart_rate_bpm`` fields.
    """

    @property
    def rr_ms(self) -> float:
        """R-R interval, ms."""
        return 60000.0 / self.heart_rate_bpm

    @property
    def n_ro_os(self) -> int:
        """Readout samples per line (oversampled)."""
        return self.matrix[0] * self.readout_oversampling

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """(dx, dy) pixel size of the reconstructed matrix, mm."""
        return self.fov_mm[0] / self.matrix[0], self.fov_mm[1] / self.matrix[1]

    @property
    def sample_time_us(self) -> float:
        """Dwell time per readout sample, µs."""
        return 1e6 / (self.bandwidth_hz_per_px * self.n_ro_os)

    def to_json(self) -> str:
        """Parameters as a JSON object string (stored in the header's userParameters)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def check_scan(self, bad: Callable[[str, str], Exception]) -> None:
        """Raise ``bad(field, why)`` for the fields both simulators check alike.

        slices, coils, matrix, acs_lines, readout_oversampling, field_t, heart_rate_bpm, snr,
        noise_readouts.
        """
        if not 1 <= self.slices <= 64:
            raise bad("slices", "must be 1..64")
        if not 2 <= self.coils <= 64:
            raise bad("coils", "must be 2..64")
        if len(self.matrix) != 2 or any(int(m) != m or m < 16 or m % 2 for m in self.matrix):
            raise bad("matrix", "must be (readout, phase), even integers ≥ 16")
        if self.acs_lines < 0 or self.acs_lines % 2 or self.acs_lines > self.matrix[1]:
            raise bad("acs_lines", "must be an even number between 0 and the phase matrix")
        if self.readout_oversampling not in (1, 2):
            raise bad("readout_oversampling", "must be 1 or 2")
        if self.field_t not in (1.5, 3.0):
            raise bad("field_t", "must be 1.5 or 3.0")
        if not 30 <= self.heart_rate_bpm <= 150:
            raise bad("heart_rate_bpm", "must be 30..150")
        if not self.snr > 0:
            raise bad("snr", "must be > 0")
        if self.noise_readouts < 1:
            raise bad("noise_readouts", "must be ≥ 1")
