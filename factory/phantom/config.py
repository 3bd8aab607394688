"""Config section ``phantom`` (owned by the phantom stage). PLACEHOLDER: extended by issue 3."""

from __future__ import annotations

from factory.params import Dist, StrictModel


class PhantomConfig(StrictModel):
    cell_count: Dist = Dist(const=1)
