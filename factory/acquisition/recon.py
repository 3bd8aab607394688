"""The reconstruction stage: FBP or SIRT from the nominal geometry, then normalisation.

Normalisation ``quantile`` follows the reference: values inside the circular field of view (radius
``min(Z, X)/2 − inset`` around the tilt axis, every Y) are replaced, by rank, with standard normal
quantiles; outside it the volume is 0. The reference draws random normal samples and sorts them;
here the expected order statistics are approximated by ``Φ⁻¹((r + ½)/n)`` (Hazen plotting
positions), so the result needs no random stream and is reproducible.

Being a rank transform, it is robust to a few very bright voxels: a capillary's glass ring (LAC
~0.9 1/µm against ~0.35 for cytoplasm) takes the top ranks of its own voxels and does not compress
the contrast of the rest, as a min-max or mean/sd scaling would.
"""

from __future__ import annotations

import torch

from factory.acquisition.volume import CHUNK_SLICES, cylinder_mask

#: Elements per block of the element-wise passes over the ranked values (64 MB of int32).
_BLOCK = 1 << 24
#: Largest group of values ranked by one sort (its temporaries take ~36 bytes an element: ~0.6 GB).
_RANK_GROUP = 1 << 24


def _sort_key(vals: torch.Tensor) -> torch.Tensor:
    """int32 keys ordered like the float32 values (IEEE-754 bits, negatives' magnitude bits
    flipped): integer sorts take a radix path, several times faster than float sorts on CPU."""
    return _sort_key_(vals.to(torch.float32).clone())


def _sort_key_(vals: torch.Tensor) -> torch.Tensor:
    """:func:`_sort_key` in place: ``vals`` (1-D float32, contiguous) becomes its int32 keys.

    Blockwise, so the temporaries are one block: ``+ 0.0`` maps −0.0 to +0.0, and
    ``bits ^ ((bits >> 31) & 0x7FFFFFFF)`` flips the magnitude bits of negatives only (the same
    integers as ``where(bits < 0, bits ^ 0x7FFFFFFF, bits)``).
    """
    for blk in vals.split(_BLOCK):
        bits = blk.add_(0.0).view(torch.int32)
        bits.bitwise_xor_(torch.bitwise_right_shift(bits, 31).bitwise_and_(0x7FFFFFFF))
    return vals.view(torch.int32)


def _rank_groups(keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Split the key range into consecutive groups of at most ~:data:`_RANK_GROUP` values.

    Returns ``(gid, n_groups)``: ``gid`` (n,) uint8 is each value's group, groups ordered by key
    (by the top 16 bits; one 16-bit bin never splits, so a group can exceed the target).
    """
    n = keys.numel()
    counts = torch.zeros(1 << 16, dtype=torch.int64, device=keys.device)
    for blk in keys.split(_BLOCK):
        counts += torch.bincount(
            torch.bitwise_right_shift(blk, 16).add_(1 << 15), minlength=1 << 16
        )
    target = max(_RANK_GROUP, -(-n // 100))  # greedy packing: at most 2n/target + 1 ≤ 201 groups
    groups, g, size = [], 0, 0
    for c in counts.tolist():
        if size and size + c > target:
            g, size = g + 1, 0
        size += c
        groups.append(g)
    lut = torch.tensor(groups, dtype=torch.uint8, device=keys.device)
    gid = torch.empty(n, dtype=torch.uint8, device=keys.device)
    for blk, out in zip(keys.split(_BLOCK), gid.split(_BLOCK), strict=True):
        torch.take(lut, torch.bitwise_right_shift(blk, 16).add_(1 << 15).long(), out=out)
    return gid, g + 1


def _ranked_quantiles_(keys: torch.Tensor) -> torch.Tensor:
    """The N(0, 1) quantile of every value's rank, ``Φ⁻¹((r + ½)/n)``, written over ``keys``.

    ``r`` is the rank in a stable sort of ``keys`` (int32, ties by position); the result is
    ``keys``' memory viewed as float32 (n,). One sort of all n values would hold ~24 bytes an
    element (values, int64 indices and the radix sort's copies of both: 2.4 GB for 10⁸ values);
    here they are ranked group by group (:func:`_rank_groups`): a group's positions ascend, so a
    stable sort within it orders ties by position, and a value's rank is its group's offset plus
    its rank inside the group. The ranks are the same and the quantiles are computed element by
    element from them, so the result is bit-identical to one sort. A group's keys are gathered
    before its results are written, and only at its own positions, so the results can overwrite
    the keys.
    """
    n = keys.numel()
    ranked = keys.view(torch.float32)
    gid, n_groups = _rank_groups(keys) if n > _RANK_GROUP else (None, 1)
    start = 0
    for g in range(n_groups):
        pos = None if gid is None else torch.nonzero(gid == g).squeeze(1)
        order = torch.sort(keys if pos is None else keys[pos], stable=True).indices
        dest = order if pos is None else pos[order]
        del order, pos
        for blk in dest.split(_BLOCK):  # float64 probabilities one block at a time
            p = torch.arange(start, start + blk.numel(), dtype=torch.float64, device=keys.device)
            ranked[blk] = torch.special.ndtri(p.add_(0.5).div_(n)).to(torch.float32)
            start += blk.numel()
        del dest
    return ranked


def masked_values(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``volume[mask]`` (C order, 1-D), ``mask`` broadcastable to ``volume`` (Z, Y, X).

    In chunks of Z slices: both ``volume[mask]`` (the (n, 3) int64 indices of the masked voxels)
    and a multi-threaded ``torch.masked_select`` (two int64 prefix-sum volumes) would first
    allocate 2 GB or more at 512³. The same values in the same order.
    """
    m = mask.expand_as(volume)
    out = torch.empty(int(m.sum()), dtype=volume.dtype, device=volume.device)
    start = 0
    for z0 in range(0, volume.shape[0], CHUNK_SLICES):
        part = torch.masked_select(volume[z0 : z0 + CHUNK_SLICES], m[z0 : z0 + CHUNK_SLICES])
        out[start : start + part.numel()] = part
        start += part.numel()
    return out


def quantile_normalize(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rank-map the values of ``volume`` where ``mask`` (broadcastable) is True onto N(0, 1)
    quantiles; 0 elsewhere. Ties are ordered by position (stable sort). Same shape, float32;
    ``volume`` is left as it is (:func:`quantile_normalize_` reuses its memory)."""
    return quantile_normalize_(volume.to(torch.float32, copy=True), mask)


def quantile_normalize_(volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`quantile_normalize` in place: ``volume`` (float32) is overwritten and returned.

    Memory: the volume plus ~5 bytes per masked value (int32 keys overwritten by the float32
    result, uint8 group) and one group's sort, instead of a second volume and ~60 bytes per value.
    """
    if volume.dtype != torch.float32:
        raise ValueError(f"quantile_normalize_: volume must be float32, got {volume.dtype}")
    # masked_values/masked_scatter_, not volume[m] (see masked_values)
    keys = _sort_key_(masked_values(volume, mask))
    volume.zero_()
    if keys.numel() == 0:
        return volume
    volume.masked_scatter_(mask.expand_as(volume), _ranked_quantiles_(keys))
    return volume


def reconstruct(config, acquisition) -> tuple[torch.Tensor, dict]:
    """Reconstruct an :class:`~factory.acquisition.Acquisition` with ``config.reconstruction``.

    Uses the nominal angles and an aligned axis (the errors the acquisition drew stay in the data).

    Returns
    -------
    recon : torch.Tensor, float32, (Z, Y, X)
        In 1/µm (``normalize: none``) or normalised (``quantile``).
    meta : dict
        JSON-safe record of the reconstruction.
    """
    from factory.tomo import fbp, sirt

    rc = config.reconstruction
    sino = acquisition.sinogram
    shape = tuple(int(s) for s in acquisition.shape)
    if acquisition.sinogram_kind == "intensities":
        sino = -torch.log(sino.clamp_min(1e-6))
    li = sino / float(acquisition.voxel_um)  # line integrals in LAC·voxel units
    angles = acquisition.angles_deg
    if rc.method == "fbp":
        recon = fbp(li, angles, filter=rc.filter, shape=shape, cache=False)
    else:
        recon = sirt(
            li, angles, iterations=rc.iterations, shape=shape, nonneg=rc.nonneg, cache=False
        )
    recon = recon.to(torch.float32)
    fov = cylinder_mask(shape, rc.fov_inset_px, recon.device)
    inside = masked_values(recon, fov)  # ~0.4 GB at 512³, freed once its moments are taken
    meta = {
        "method": rc.method,
        "filter": rc.filter if rc.method == "fbp" else None,
        "iterations": rc.iterations if rc.method == "sirt" else None,
        "nonneg": rc.nonneg if rc.method == "sirt" else None,
        "angles": "nominal",
        "n_angles": int(len(angles)),
        "normalize": rc.normalize,
        "fov_radius_px": min(shape[0], shape[2]) / 2.0 - rc.fov_inset_px,
        "lac_in_fov_mean_per_um": float(inside.mean()) if inside.numel() else None,
        "lac_in_fov_sd_per_um": float(inside.std()) if inside.numel() > 1 else None,
    }
    del inside, li, sino
    if rc.normalize == "quantile":
        recon = quantile_normalize_(recon, fov)  # recon is ours: normalised in its own memory
        meta["units"] = "standard normal scores (rank-normalised inside the FOV, 0 outside)"
    else:
        meta["units"] = "LAC in 1/um"
    return recon.contiguous(), meta
