"""Intensity polarity of a real tomogram: absorbing material bright (LAC, the factory's convention)
or dark (a transmission-like rendering, as some pipelines and viewers write tomograms).

Training and inference normalise by rank (:func:`models.infer.normalize_volume`), so any
monotonic increasing rescaling of a file (units, offsets, a log, 8-bit export) is already
irrelevant; the direction is the one bit left, and it matters: the capillary model of the README
scores cell IoU 0.92 on a simulated tomogram and 0.61 on the same file inverted.

The direction is read off the network itself: the model is run on a slab of the normalised volume
as it is and negated (the rank normalisation of the inverted file is exactly the negated
normalisation), and the file reads as inverted when the network is clearly surer of itself that
way: the mean entropy of its class probabilities inside the field of view below
:data:`FLIP_RATIO` of the as-is one, without losing most of its foreground. Trained on one
polarity, a network is less sure of the other (``python bench/polarity.py``). ``segment`` and
``evaluate --real`` take ``--polarity``: ``as-is`` (the default: the file is used as stored, and a
warning says when the detection disagrees), ``inverted``, or ``auto`` (the detection decides).
The detection is not the default because it reads the network, not the physics: a tomogram
unlike the training data can leave the network about as unsure either way.
"""

from __future__ import annotations

import numpy as np

from factory.errors import UserError

POLARITIES = ("auto", "as-is", "inverted")
POLARITY_HELP = (
    "intensity polarity of the input: as-is (absorbing = bright, as LAC), inverted (absorbing = "
    "dark), or auto: the one the network is clearly surer of (models/polarity.py)"
)
#: flip only when the inverted volume's mean prediction entropy is below this fraction of the
#: as-is one's
FLIP_RATIO = 0.85
#: slices along the model's slicing axis scored per polarity (the central slab)
SLAB_SLICES = 24


def parse_polarity(value: str, param: str = "polarity") -> str:
    """``value`` lower-cased if it is one of :data:`POLARITIES`, else :class:`UserError`."""
    v = str(value).strip().lower()
    if v not in POLARITIES:
        raise UserError(f"expected one of {', '.join(POLARITIES)}, got {value!r}", param=param)
    return v


def mean_entropy(probs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean Shannon entropy (nats) of (C, Z, Y, X) class probabilities over the voxels of
    ``mask`` (broadcastable to (Z, Y, X); all voxels when None)."""
    p = np.clip(probs, 1e-7, 1.0)
    h = -(p * np.log(p)).sum(0)
    if mask is not None:
        h = h[np.broadcast_to(mask, h.shape)]
    return float(h.mean()) if h.size else 0.0


def central_slab(volume: np.ndarray, axis: int, n: int) -> np.ndarray:
    """The central ``n`` slices of a (Z, Y, X) volume along ``axis`` (all if fewer)."""
    size = volume.shape[axis]
    start = max(0, (size - n) // 2)
    return np.take(volume, np.arange(start, min(size, start + n)), axis=axis)


def detect_polarity(predict, volume: np.ndarray, axis: int, fov: np.ndarray | None) -> dict:
    """Score both polarities of a normalised (Z, Y, X) volume.

    Parameters
    ----------
    predict : callable
        ``predict(volume) -> (C, Z, Y, X)`` probabilities of a normalised volume.
    volume : ndarray (Z, Y, X)
        Normalised as in training (0 outside the field of view).
    axis : int
        The model's slicing axis; the central :data:`SLAB_SLICES` slices along it are scored.
    fov : ndarray of bool or None
        Field-of-view mask broadcastable to ``volume`` (scores are averaged inside it).

    Returns
    -------
    dict
        ``detected`` (``"as-is"`` or ``"inverted"``), ``entropy_as_is``, ``entropy_inverted``
        (nats), ``ratio`` (inverted / as-is), ``foreground_as_is``, ``foreground_inverted``
        (fraction of voxels not predicted background) and ``flip_ratio``. ``inverted`` is
        detected when the ratio is below :data:`FLIP_RATIO` and the inverted volume keeps at
        least half the as-is foreground (a network that calls everything background is sure of
        itself too).
    """
    slab = np.ascontiguousarray(central_slab(volume, axis, SLAB_SLICES))
    full = np.broadcast_to(fov, volume.shape) if fov is not None else None
    mask = None if full is None else central_slab(full, axis, SLAB_SLICES)
    scores = {}
    for name, v in (("as_is", slab), ("inverted", np.ascontiguousarray(-slab))):
        probs = predict(v)
        fg = probs.argmax(0) > 0
        scores[f"entropy_{name}"] = round(mean_entropy(probs, mask), 5)
        scores[f"foreground_{name}"] = round(
            float(fg[mask].mean() if mask is not None else fg.mean()), 5
        )
    h0, h1 = scores["entropy_as_is"], scores["entropy_inverted"]
    ratio = h1 / h0 if h0 > 0 else 1.0
    flip = ratio < FLIP_RATIO and scores["foreground_inverted"] >= 0.5 * scores["foreground_as_is"]
    return {"detected": "inverted" if flip else "as-is", "ratio": round(ratio, 4), **scores,
            "flip_ratio": FLIP_RATIO}  # fmt: skip


def apply_polarity(
    volume: np.ndarray, polarity: str, predict, axis: int, fov: np.ndarray | None
) -> tuple[np.ndarray, dict]:
    """The normalised volume in the polarity ``polarity`` says and a record: ``given``,
    ``inverted`` (applied) and :func:`detect_polarity`'s scores, computed whatever is given
    (``auto`` applies its ``detected``; the others only report it)."""
    polarity = parse_polarity(polarity)
    scores = detect_polarity(predict, volume, axis, fov)
    inverted = scores["detected"] == "inverted" if polarity == "auto" else polarity == "inverted"
    record = {"given": polarity, "inverted": inverted, **scores}
    return (-volume if inverted else volume), record


def describe(record: dict) -> str:
    """One phrase for a console line, e.g. ``polarity as-is (given; detected as-is, entropy
    ratio 1.36)``."""
    name = "inverted" if record["inverted"] else "as-is"
    how = "detected" if record["given"] == "auto" else f"given; detected {record['detected']}"
    return f"polarity {name} ({how}, entropy ratio {record['ratio']:.2f})"


def disagreement(record: dict | None, flag: str = "--polarity") -> str | None:
    """A warning when the polarity used is not the one detected (None otherwise)."""
    if not record or record["given"] == "auto":
        return None
    used = "inverted" if record["inverted"] else "as-is"
    if record["detected"] == used:
        return None
    return (
        f"warning: the network is surer of this tomogram {record['detected']} (prediction "
        f"entropy ratio {record['ratio']:.2f}); if absorbing material is "
        f"{'dark' if record['detected'] == 'inverted' else 'bright'} in it, pass {flag} "
        f"{record['detected']} (or auto)"
    )


__all__ = [
    "FLIP_RATIO",
    "POLARITIES",
    "POLARITY_HELP",
    "apply_polarity",
    "describe",
    "detect_polarity",
    "disagreement",
    "mean_entropy",
    "parse_polarity",
]
