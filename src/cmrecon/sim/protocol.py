"""What the LGE and cine simulators' protocol parameters share: derived timing and geometry."""

from __future__ import annotations

import dataclasses
import json

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
