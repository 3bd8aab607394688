"""``generate_phantom``: one yeast-cell phantom (LAC and labels) from (config, seed, index)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

import schemas
from factory.phantom import mount as mountmod
from factory.phantom import plan as planmod
from factory.phantom.placement import layout_cells
from factory.phantom.voxelize import bounding_box, voxelize_cell
from factory.rng import PhantomStreams

_NAMES = {c["id"]: c["name"] for c in schemas.label_table()["classes"]}


@dataclass
class Phantom:
    """One phantom on a grid (Z, Y, X).

    Attributes
    ----------
    lac : torch.Tensor
        float32 (Z, Y, X), linear absorption coefficient in 1/µm; background 0 (a capillary
        mount's glass and medium are in it; a grid's ice, film and bars are added by the
        acquisition stage).
    labels : torch.Tensor
        uint8 (Z, Y, X), ids of the full label table (:mod:`schemas`); nested objects take the
        inner label; background 0 (ice, fiducials, cracks are added by the acquisition stage);
        a capillary's glass and medium are ``schemas.CAPILLARY`` and ``schemas.MEDIUM``.
    objects : list of dict
        JSON-safe record of every object placed: ``class``, ``cell``, ``centre_vox`` (z, y, x in the
        grid, before deformation), ``radii_vox`` (along the cell's local axes), ``lac_per_um``, ...
    meta : dict
        JSON-safe record of every drawn scalar (counts requested/placed, per-cell draws, texture;
        ``mount`` for a capillary: its drawn diameter, wall, axis offset, LACs).
    """

    lac: torch.Tensor
    labels: torch.Tensor
    objects: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def _r(x, nd: int = 4):
    """Round floats (scalars or arrays) for a compact JSON record."""
    a = np.asarray(x, dtype=np.float64)
    return round(float(a), nd) if a.ndim == 0 else np.round(a, nd).tolist()


def _lac_ratio(cfg, energy_ev: float) -> float:
    if not cfg.scale_lac_with_energy:
        return 1.0
    from factory.materials import MATERIALS, MEASURED_ENERGY_EV, lac_compound

    prot = MATERIALS["protein"]
    mu = lac_compound(prot.formula, prot.density_g_cm3, float(energy_ev))
    return mu / lac_compound(prot.formula, prot.density_g_cm3, MEASURED_ENERGY_EV)


def _zeros(shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed float32 and uint8 volumes. On CPU they come from numpy's calloc: pages of the
    background that no cell touches are never faulted in, which saves ~0.3 s per 512³ phantom."""
    if device.type == "cpu":
        return (
            torch.from_numpy(np.zeros(shape, dtype=np.float32)),
            torch.from_numpy(np.zeros(shape, dtype=np.uint8)),
        )
    return (
        torch.zeros(shape, dtype=torch.float32, device=device),
        torch.zeros(shape, dtype=torch.uint8, device=device),
    )


def _cell_objects(cell: planmod.CellPlan) -> list[dict]:
    to_grid = lambda p: _r(cell.centre + cell.rotation @ np.asarray(p))  # noqa: E731
    objs = [
        {
            "class": "cell",
            "cell": cell.index,
            "centre_vox": _r(cell.centre),
            "radii_vox": _r(cell.radii),
            "rotation": _r(cell.rotation, 6),
            "wall_thickness_vox": _r(cell.wall),
            "lac_per_um": _r(cell.lac, 6),
            "wall_lac_per_um": _r(cell.wall_lac, 6),
            "bound_vox": _r(cell.bound),
            "deformation": {
                "amplitude_vox": _r(cell.deform_amp),
                "scale_vox": _r(cell.deform_scale),
            },
            "bud": None
            if cell.bud is None
            else {
                "centre_vox": to_grid(cell.bud["centre"]),
                "radii_vox": _r(cell.bud["radii"]),
                "size_ratio": _r(cell.bud["size_ratio"]),
                "neck": _r(cell.bud["neck"]),
            },
        }
    ]

    def ell(e: planmod.Ellipsoid) -> dict:
        d = {
            "class": e.cls,
            "cell": cell.index,
            "centre_vox": to_grid(e.centre),
            "radii_vox": _r(e.radii),
            "lac_per_um": _r(e.lac, 6),
        }
        d.update(e.extra)
        return d

    if cell.nucleus is not None:
        objs.append(ell(cell.nucleus))
    if cell.nucleolus is not None:
        objs.append(ell(cell.nucleolus))
    objs.extend(ell(v) for v in cell.vacuoles)
    objs.extend(ell(d) for d in cell.droplets)
    for k, net in enumerate(cell.mito_networks):
        objs.append(
            {
                "class": "mitochondrion",
                "cell": cell.index,
                "network": k,
                "segments": int(net["segments"]),
                "radius_vox": _r(net["radius_vox"]),
                "length_vox": _r(net["length_vox"]),
                "lac_per_um": _r(cell.mito_lac, 6),
            }
        )
    return objs


@contextmanager
def _cpu_threads(n: int | None, device: torch.device):
    """Run the block with ``n`` torch intra-op threads on CPU (restored after)."""
    prev = torch.get_num_threads()
    if n is None or device.type != "cpu" or n == prev:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def generate_phantom(
    config, seed: int, *, index: int = 0, device="cpu", threads: int | None = 1
) -> Phantom:
    """Generate phantom ``index`` of the dataset (``config``, ``seed``).

    Parameters
    ----------
    config : factory.config.SimConfig
        The whole config: ``grid.shape`` (Z, Y, X), ``grid.voxel_nm``, ``energy_ev``, ``phantom``.
    seed, index : int
        Global seed and sample index. Each part draws from its own sub-stream of the phantom
        stage (:class:`factory.rng.PhantomStreams`): numpy streams for the mount, the cell count,
        the texture parameters, the layout, and per cell its shape and each organelle kind; torch
        generators per cell for its deformation and texture fields. Same inputs give bit-identical
        volumes on CPU.
    device : str or torch.device
        Where the volumes are built and returned.
    threads : int or None
        torch CPU intra-op threads while the phantom is built (restored after; None keeps the
        current setting). The work is many operations on cell-sized boxes, for which thread
        hand-offs cost more than they gain: one thread is faster, and several times faster on a
        busy machine (bench/phantom.py). Results do not depend on it.

    Returns
    -------
    Phantom
        ``lac`` float32 (Z, Y, X) in 1/µm, ``labels`` uint8 (Z, Y, X) (full table), ``objects``,
        ``meta``.
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads: must be a positive integer or None, got {threads!r}")
    device = torch.device(device)
    with _cpu_threads(threads, device):
        return _generate(config, seed, index, device)


def _layout(config, cells, cap, shape, rng, xy) -> list:
    """Bounding-sphere centres of the cells (None: left out): a compact cluster about the mid-plane
    on a grid mount, packed along the capillary (Y) in a capillary; ``xy`` are the drawn jitters
    (the first shifts a capillary's chain of cells along Y)."""
    cfg = config.phantom
    bounds = [c.bound for c in cells]
    if cap is None:
        return layout_cells(
            bounds,
            shape,
            rng,
            gap=cfg.cells.gap_vox,
            z_offsets=[c.z_offset for c in cells],
            xy_offset=xy,
        )
    return mountmod.layout_in_capillary(
        bounds,
        cap,
        shape,
        rng,
        gap=cfg.cells.gap_vox,
        spacing=config.mount.spacing_vox,
        wall_gap=config.mount.wall_gap_vox,
        y_offset=xy[0],
    )


@dataclass
class _Plan:
    """Everything a phantom draws from its numpy streams before any voxel is painted.

    Attributes
    ----------
    ratio : float
        LAC scale for the beam energy (1 when ``scale_lac_with_energy`` is off).
    fit : float
        Size factor that fits the cells to the grid.
    cap : object or None
        The drawn capillary (:func:`factory.phantom.mount.draw_capillary`), None on a grid.
    cells : list of CellPlan
        Every cell drawn, placed or not (``centre`` None when left out).
    placed : list of CellPlan
        The cells placed in the grid, with their organelles drawn.
    texture : dict or None
        Drawn texture parameters (``amplitude``, ``scale_vox`` in voxels, ``octaves``,
        ``persistence``), None when texture is off.
    xy : tuple of float
        The two drawn layout jitters, in voxels.
    """

    ratio: float
    fit: float
    cap: object
    cells: list
    placed: list
    texture: dict | None
    xy: tuple[float, float]


def _draw_texture(tx, rng, fit: float) -> dict | None:
    """Texture parameters (``scale_vox`` in voxels, at least 2) drawn from ``rng``; None when off."""
    if not tx.enabled:
        return None
    return {
        "amplitude": float(tx.amplitude.sample(rng)),
        "scale_vox": max(2.0, float(tx.scale_vox.sample(rng)) * fit),
        "octaves": tx.octaves,
        "persistence": tx.persistence,
    }


def _place_cells(config, cells, cap, shape, rng, xy) -> list:
    """Lay the cells out, set each placed cell's ``centre`` (z, y, x voxels) and return those placed."""
    placed = []
    for cell, centre in zip(cells, _layout(config, cells, cap, shape, rng, xy), strict=True):
        if centre is not None:
            cell.centre = centre - cell.rotation @ cell.offset
            placed.append(cell)
    return placed


def _draw_plan(config, shape: tuple[int, int, int], streams: PhantomStreams) -> _Plan:
    """Draw mount, cells, texture, jitter, layout and organelles, each part from its own stream
    of ``streams`` (so the parts' draws do not depend on each other's; within a part, the order
    of the draws fixes every phantom of a seed: do not reorder them)."""
    cfg = config.phantom
    ratio = _lac_ratio(cfg, config.energy_ev)
    fit = cfg.fit_factor(shape)
    ctx = planmod.Ctx(radius_scale=cfg.scale * fit, fit=fit, lac_ratio=ratio)
    cap = None
    if config.mount.kind == "capillary":
        cap = mountmod.draw_capillary(
            config.mount,
            streams.rng("mount"),
            shape,
            float(config.grid.voxel_nm),
            float(config.energy_ev),
        )
    cells = planmod.draw_cells(
        cfg, streams.rng("cell_count"), lambda i: streams.rng("cell", i), ctx
    )
    texture = _draw_texture(cfg.texture, streams.rng("texture"), fit)
    rng = streams.rng("layout")
    xy = (float(cfg.cells.xy_jitter_vox.sample(rng)), float(cfg.cells.xy_jitter_vox.sample(rng)))
    placed = _place_cells(config, cells, cap, shape, rng, xy)
    for cell in placed:
        planmod.draw_organelles(cfg, cell, lambda kind, i=cell.index: streams.rng(kind, i), ctx)
    return _Plan(ratio, fit, cap, cells, placed, texture, xy)


def _paint(config, plan: _Plan, shape, streams: PhantomStreams, device):
    """Voxelize the placed cells (and a capillary) into fresh volumes.

    Returns
    -------
    lac, labels : torch.Tensor
        float32 (Z, Y, X) in 1/µm and uint8 (Z, Y, X).
    voxels : numpy.ndarray
        int64 (NUM_CLASSES,), voxels per label id (background included).
    objects : list of dict
        Object records of the placed cells (:func:`_cell_objects`).
    per_cell : list of dict
        Per-cell bounding box (voxels) and drawn scalars.
    """
    lac, labels = _zeros(shape, device)
    voxels = np.zeros(schemas.NUM_CLASSES, dtype=np.int64)
    objects: list[dict] = []
    per_cell = []
    for cell in plan.placed:
        counts = voxelize_cell(
            cell,
            lac,
            labels,
            texture=plan.texture,
            deformation_generator=streams.torch("deformation_field", cell.index),
            texture_generator=streams.torch("texture_field", cell.index),
            deformation_mode=config.phantom.cells.deformation.mode,
        )
        voxels[: len(counts)] += np.asarray(counts)
        objects.extend(_cell_objects(cell))
        lo, hi = bounding_box(cell, shape)
        per_cell.append({"cell": cell.index, "bbox_lo": lo, "bbox_hi": hi, **cell.drawn})
    if plan.cap is not None:
        voxels[schemas.CAPILLARY], voxels[schemas.MEDIUM] = mountmod.paint_capillary(
            plan.cap, lac, labels
        )
    voxels[0] = int(np.prod(shape)) - int(voxels[1:].sum())  # the boxes count only part of it
    return lac, labels, voxels, objects, per_cell


def _meta(config, plan: _Plan, shape, voxels, objects, per_cell) -> dict:
    """JSON-safe record of the phantom's drawn scalars and counts (:attr:`Phantom.meta`)."""
    # a grid's meta lists the cell classes only (as before); a capillary's all classes
    n_labels = schemas.NUM_CELL_CLASSES if plan.cap is None else schemas.NUM_CLASSES
    by_class: dict[str, int] = {}
    for o in objects:
        by_class[o["class"]] = by_class.get(o["class"], 0) + 1
    meta = {
        "shape": list(shape),
        "voxel_nm": float(config.grid.voxel_nm),
        "energy_ev": float(config.energy_ev),
        "lac_energy_ratio": _r(plan.ratio, 6),
        "fit_factor": _r(plan.fit, 6),
        "cells_requested": len(plan.cells),
        "cells_placed": len(plan.placed),
        "objects_per_class": by_class,
        "voxels_per_label": {_NAMES[i]: int(voxels[i]) for i in range(n_labels)},
        "texture": None if plan.texture is None else {k: _r(v) for k, v in plan.texture.items()},
        "xy_jitter_vox": _r(plan.xy),
        "cells": per_cell,
        "unplaced_cells": [
            {"cell": c.index, "bound_vox": _r(c.bound)} for c in plan.cells if c.centre is None
        ],
    }
    if plan.cap is not None:
        meta["mount"] = plan.cap.to_meta()
    return meta


def _generate(config, seed: int, index: int, device: torch.device) -> Phantom:
    """Draw the plan from the phantom's numpy streams, then paint it with its torch streams (see
    :func:`generate_phantom`)."""
    shape = tuple(int(n) for n in config.grid.shape)
    streams = PhantomStreams(seed, index, device)
    plan = _draw_plan(config, shape, streams)
    lac, labels, voxels, objects, per_cell = _paint(config, plan, shape, streams, device)
    meta = _meta(config, plan, shape, voxels, objects, per_cell)
    return Phantom(lac=lac, labels=labels, objects=objects, meta=meta)
