"""Building blocks of every config section: strict models, random quantities (:class:`Dist`) and
the bounds their draws must keep (:class:`Bounds`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_serializer, model_validator
from pydantic_core import core_schema


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Dist(StrictModel):
    """A scalar random quantity. Exactly one of ``const``, ``normal``, ``uniform``, ``choice``.

    YAML forms: ``3.0`` (constant), ``{normal: [mean, sd], clamp: [lo, hi]}``,
    ``{uniform: [lo, hi]}``, ``{choice: [a, b, c], p: [..]}``. ``clamp`` applies to any kind.
    """

    const: float | None = None
    normal: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    choice: tuple[float, ...] | None = None
    p: tuple[float, ...] | None = None
    clamp: tuple[float, float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _scalar_is_const(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"const": float(data)}
        return data

    @model_validator(mode="after")
    def _check(self) -> Dist:
        kinds = [
            k for k in ("const", "normal", "uniform", "choice") if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of const, normal, uniform, choice (got {kinds})")
        vals = [v for k in kinds for v in np.atleast_1d(getattr(self, k))]
        if not all(np.isfinite(vals)):
            raise ValueError(f"values must be finite, got {vals}")
        if self.normal is not None and self.normal[1] < 0:
            raise ValueError(f"normal sd must be >= 0, got {self.normal[1]}")
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError(f"uniform needs lo <= hi, got {list(self.uniform)}")
        if self.clamp is not None and self.clamp[0] > self.clamp[1]:
            raise ValueError(f"clamp needs lo <= hi, got {list(self.clamp)}")
        if self.choice is not None and len(self.choice) == 0:
            raise ValueError("choice needs at least one value")
        if self.p is not None:
            if self.choice is None or len(self.p) != len(self.choice):
                raise ValueError("p needs a choice list of the same length")
            if any(x < 0 for x in self.p) or not np.isclose(sum(self.p), 1.0):
                raise ValueError(f"p must be non-negative and sum to 1, got {list(self.p)}")
        return self

    @model_serializer(mode="wrap")
    def _drop_unset_kinds(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}

    @property
    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value a draw can take (±inf for an unclamped normal)."""
        if self.const is not None:
            lo = hi = self.const
        elif self.uniform is not None:
            lo, hi = self.uniform
        elif self.choice is not None:
            lo, hi = min(self.choice), max(self.choice)
        else:
            lo, hi = (-np.inf, np.inf) if self.normal[1] > 0 else (self.normal[0],) * 2
        if self.clamp is not None:
            lo, hi = max(lo, self.clamp[0]), min(hi, self.clamp[1])
            if lo > hi:  # the whole support lies outside the clamp
                lo = hi = self.clamp[0] if hi < self.clamp[0] else self.clamp[1]
        return float(lo), float(hi)

    @property
    def mean(self) -> float:
        """The nominal centre (before clamping), for reports and defaults."""
        if self.const is not None:
            return self.const
        if self.normal is not None:
            return self.normal[0]
        if self.uniform is not None:
            return 0.5 * (self.uniform[0] + self.uniform[1])
        return float(np.average(self.choice, weights=self.p))

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None = None):
        """Draw from ``rng``: a Python float for ``size=None``, else a float64 array."""
        if self.const is not None:
            out = np.full(size, self.const) if size is not None else self.const
        elif self.normal is not None:
            out = rng.normal(self.normal[0], self.normal[1], size)
        elif self.uniform is not None:
            out = rng.uniform(self.uniform[0], self.uniform[1], size)
        else:
            out = rng.choice(np.asarray(self.choice, float), size=size, p=self.p)
        if self.clamp is not None:
            out = np.clip(out, self.clamp[0], self.clamp[1])
        return float(out) if size is None else np.asarray(out, dtype=np.float64)

    def sample_int(self, rng: np.random.Generator) -> int:
        """Draw and round to the nearest integer (counts)."""
        return int(round(self.sample(rng)))


def show(d: Dist) -> str:
    """A distribution as a config spells it, for error messages."""
    return str(d.model_dump(mode="json"))


@dataclass(frozen=True)
class Bounds:
    """Where every draw of a :class:`Dist` field must lie: ``x: Annotated[Dist, Bounds(lo=0)]``.

    Checked on :attr:`Dist.bounds` when the field is validated (so the error names the field);
    several ``Bounds`` on one field are checked in order. ``lo``/``hi`` are inclusive unless
    ``lo_open``/``hi_open``. The message is ``"{name}: ..."`` (``name``: the field's, unless given):
    with ``msg``, that text with ``{got}`` the distribution; with ``what`` (a lower bound only),
    ``"every {what} draw must be >= lo; got {...}"``; otherwise ``"every draw must be >= lo, but it
    can be x (clamp it)"`` (or ``<= hi``).
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    what: str | None = None
    msg: str | None = None
    name: str | None = None

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.with_info_after_validator_function(
            lambda d, info: self.check(d, info.field_name), handler(source)
        )

    def check(self, d: Dist, name: str) -> Dist:
        """Return ``d``, or raise a ValueError if a draw of it can leave the bounds."""
        b_lo, b_hi = d.bounds
        low = self.lo is not None and (b_lo < self.lo or (self.lo_open and b_lo <= self.lo))
        high = self.hi is not None and (b_hi > self.hi or (self.hi_open and b_hi >= self.hi))
        if not (low or high):
            return d
        name = self.name or name
        if self.msg is not None:
            raise ValueError(f"{name}: " + self.msg.format(got=show(d)))
        rel = ">" if self.lo_open else ">="
        if self.what is not None:
            hint = " (clamp the normal)" if d.normal is not None and d.clamp is None else ""
            raise ValueError(
                f"{name}: every {self.what} draw must be {rel} {self.lo}{hint}; got {show(d)}"
            )
        if low:
            raise ValueError(
                f"{name}: every draw must be {rel} {self.lo}, but it can be {b_lo} (clamp it)"
            )
        rel = "<" if self.hi_open else "<="
        raise ValueError(
            f"{name}: every draw must be {rel} {self.hi}, but it can be {b_hi} (clamp it)"
        )
