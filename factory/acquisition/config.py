"""Config sections ``acquisition`` and ``reconstruction``. PLACEHOLDER: extended by issue 4."""

from __future__ import annotations

from factory.params import Dist, StrictModel


class AcquisitionConfig(StrictModel):
    tilt_range_deg: Dist = Dist(const=100)


class ReconstructionConfig(StrictModel):
    method: str = "fbp"
