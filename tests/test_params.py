"""``factory.params.Bounds``: the one way a config declares where a Dist field's draws must lie."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import ValidationError

from factory.params import Bounds, Dist, StrictModel


class _M(StrictModel):
    size: Annotated[Dist, Bounds(lo=0, what="size")] = Dist(const=1.0)
    radius: Annotated[Dist, Bounds(lo=0, lo_open=True, what="size")] = Dist(const=1.0)
    frac: Annotated[Dist, Bounds(lo=0.0, hi=0.5)] = Dist(const=0.1)
    ratio: Annotated[
        Dist, Bounds(lo=0, lo_open=True, what="size"), Bounds(hi=1, msg="must be <= 1, got {got}")
    ] = Dist(const=0.5)
    dose: Annotated[Dist, Bounds(lo=0.0, lo_open=True, name="dose (photons)")] = Dist(const=1.0)


def _error(**fields) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as err:
        _M(**fields)
    first = err.value.errors()[0]
    return first["loc"], first["msg"].removeprefix("Value error, ")


def test_bounds_accept_draws_inside_and_on_closed_ends():
    m = _M(
        size=0, frac={"uniform": [0.0, 0.5]}, ratio=1, radius={"normal": [3, 1], "clamp": [1, 5]}
    )
    assert m.size.const == 0.0 and m.ratio.const == 1.0


@pytest.mark.parametrize(
    ("fields", "loc", "msg"),
    [
        ({"size": -1}, "size", "size: every size draw must be >= 0; got {'const': -1.0}"),
        ({"radius": 0}, "radius", "radius: every size draw must be > 0; got {'const': 0.0}"),
        (
            {"radius": {"normal": [3, 1]}},
            "radius",
            "radius: every size draw must be > 0 (clamp the normal); got {'normal': [3.0, 1.0]}",
        ),
        (
            {"frac": {"uniform": [-0.1, 0.2]}},
            "frac",
            "frac: every draw must be >= 0.0, but it can be -0.1 (clamp it)",
        ),
        ({"frac": 0.6}, "frac", "frac: every draw must be <= 0.5, but it can be 0.6 (clamp it)"),
        ({"ratio": 0}, "ratio", "ratio: every size draw must be > 0; got {'const': 0.0}"),
        ({"ratio": 2}, "ratio", "ratio: must be <= 1, got {'const': 2.0}"),
        (
            {"dose": 0},
            "dose",
            "dose (photons): every draw must be > 0.0, but it can be 0.0 (clamp it)",
        ),
    ],
)
def test_bounds_refuse_draws_outside_naming_the_field(fields, loc, msg):
    assert _error(**fields) == ((loc,), msg)


def test_bounds_check_directly():
    b = Bounds(hi=0.99)
    assert b.check(Dist(const=0.5), "amplitude") == Dist(const=0.5)
    with pytest.raises(
        ValueError, match=r"^amplitude: every draw must be <= 0.99, but it can be 1.0"
    ):
        b.check(Dist(const=1.0), "amplitude")
