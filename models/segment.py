"""Segmenting a tomogram: rescale, normalise, slide the window, post-process, write labels and
measurements.

``segment_file(model, INPUT, OUTPUT)`` reads MRC/TIFF/NPY (:mod:`models.volume_io`) with its voxel
size (``--voxel-nm``, else the file header; refused when neither is known), resamples it
trilinearly to the model's training voxel size, normalises it there as the training data were
(rank mapping to a standard normal inside the field-of-view cylinder around the tilt axis Y, 0
outside; :func:`models.infer.normalize_volume`), predicts class probabilities slice by slice with
the ``window``-slice stack (batched, on the GPU when there is one, with a progress bar), post-processes
the argmax classes on the coarser of the model's grid and the input's (:func:`clean_on_coarser_grid`:
a finer tomogram is cleaned on the model's grid and its objects brought up to the input grid with
smooth surfaces) and writes

* ``OUTPUT`` (.tif/.tiff/.mrc/.npy): class ids (uint8; MRC mode 0), voxel size in the header;
* ``OUTPUT_STEM_objects.EXT``: object ids (uint16/int32) of the innermost object at each voxel;
* ``OUTPUT_STEM.csv``: one row per object: id, class, voxels, volume in µm³, mean input value
  (LAC for a tomogram in 1/µm), centroid (z, y, x) in voxels and µm, containing cell;
* ``OUTPUT_STEM.json``: input and model voxel sizes (nm), zoom, both grids, checkpoint, counts.

Post-processing starts from the classifier's decision, the argmax class of every voxel (what
``simaq evaluate`` scores): the cell is the argmax's non-background voxels, each inner class its
argmax voxels, cleaned by a Gaussian majority vote (:func:`majority_vote`; not for thin classes).
It never thresholds probabilities, so voxels the argmax calls background do not turn into cell
because the network is unsure of its answer. Then, following the reference (SIMAQ.md) with scipy.ndimage only: classes are
nested, the cell (every non-background class) contains the inner classes, whose masks are clipped
to the cells; per class: hole filling, opening, 3D connected components, removal of objects smaller
than a sphere of a minimum radius, and a split of touching objects between the maxima of their
distance transform. Inner classes are painted over the cell in label-id order (later ids overwrite
earlier ones, as in the phantom). Minimum radii are physical (nm): the reference's vacuole 3 and LD 2
voxels at 25 nm (75 / 50 nm); its cell value (70 voxels = 1.75 µm) exceeds its own cell radii, so
500 nm is used for cells.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from factory.errors import UserError

if TYPE_CHECKING:
    from factory.dataset.storage import Store


@dataclass(frozen=True)
class ClassPost:
    """Post-processing of one class: majority vote (``smooth``), hole filling, opening radius
    (voxels), minimum object radius (nm, as an equivalent sphere), watershed splitting of touching
    objects."""

    fill: bool = True
    open_radius: int = 0
    min_radius_nm: float = 50.0
    split: bool = False
    smooth: bool = True


DEFAULT_POST: dict[str, ClassPost] = {
    "cell": ClassPost(fill=True, open_radius=1, min_radius_nm=500.0, split=True),
    "cytoplasm": ClassPost(fill=True, open_radius=1, min_radius_nm=500.0, split=True),
    "vacuole": ClassPost(fill=True, open_radius=1, min_radius_nm=75.0, split=True),
    "lipid_droplet": ClassPost(fill=True, open_radius=0, min_radius_nm=50.0, split=False),
    "nucleus": ClassPost(fill=True, open_radius=1, min_radius_nm=200.0, split=False),
    # thin structures (a 1-3 voxel shell, tubules) would not survive a majority vote
    "mitochondrion": ClassPost(fill=False, min_radius_nm=30.0, smooth=False),
    "cell_wall": ClassPost(fill=False, open_radius=0, min_radius_nm=0.0, smooth=False),
}


def _ball(r: int) -> np.ndarray:
    g = np.arange(-r, r + 1)
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    return zz**2 + yy**2 + xx**2 <= r * r + 1e-9


# above this radius (voxels) the two distance transforms beat the ball's erosion and dilation
# (128³ here: 0.37 s against 0.61 s at radius 4, 2.7 s against 0.55 s at 8)
EDT_FROM_RADIUS = 4


def open_ball(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening of a (Z, Y, X) mask by the ball ``x² + y² + z² ≤ radius²`` (voxels), the
    volume's outside counting as background (as ``ndi.binary_opening`` with ``border_value`` 0).

    Above :data:`EDT_FROM_RADIUS` it is done with two Euclidean distance transforms, whose cost
    does not grow with the radius (the structuring element's grows as ``radius³`` per voxel, and
    a tomogram finer than the model's grid gets its radii scaled up by the zoom)."""
    if radius <= EDT_FROM_RADIUS:
        return ndi.binary_opening(mask, structure=_ball(radius))
    r2 = radius * radius + 0.5  # squared distances are integers
    inner = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1] ** 2 > r2
    if not inner.any():
        return inner
    return ndi.distance_transform_edt(~inner) ** 2 <= r2


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: the 6-connected background components that do not touch
    the volume's faces (what ``ndi.binary_fill_holes`` gives, in one labelling pass)."""
    lab, n = ndi.label(~mask)
    outside = np.zeros(n + 1, bool)
    outside[0] = True
    for axis in range(mask.ndim):
        for end in (0, -1):
            outside[np.take(lab, end, axis=axis)] = True
    return mask | ~outside[lab]


def remove_small(mask: np.ndarray, min_voxels: float) -> tuple[np.ndarray, int]:
    """Drop 6-connected components with fewer than ``min_voxels`` voxels; return (mask, kept)."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask, 0
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[lab], int(keep[1:].sum())


def split_touching(mask: np.ndarray, min_distance: float) -> np.ndarray:
    """Instance ids (int32, 0 outside) of ``mask``, touching objects split.

    Markers are the maxima of the distance transform (at least ``min_distance`` voxels apart;
    a plateau is one marker); inside each connected component with several markers every voxel
    goes to its nearest marker (the watershed of the distance map for round objects, computed
    with one Euclidean distance transform per component instead of a flood). Every connected
    component gets at least one id; ids are consecutive from 1.
    """
    out = np.zeros(mask.shape, np.int32)
    if not mask.any():
        return out
    comp, _ = ndi.label(mask)
    dist = ndi.distance_transform_edt(mask)
    size = 2 * max(1, int(round(min_distance))) + 1
    peaks = (dist == ndi.maximum_filter(dist, size=size)) & mask & (dist >= 1.0)
    next_id = 1
    for c, sl in enumerate(ndi.find_objects(comp), start=1):
        if sl is None:
            continue
        inside = comp[sl] == c
        markers, k = ndi.label(peaks[sl] & inside, structure=np.ones((3, 3, 3), bool))
        view = out[sl]
        if k <= 1:
            view[inside] = next_id
            next_id += 1
            continue
        _, idx = ndi.distance_transform_edt(markers == 0, return_indices=True)
        view[inside] = markers[tuple(idx)][inside] + (next_id - 1)
        next_id += k
    return out


def majority_vote(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian majority vote on a boolean (Z, Y, X) mask: True where more than half of the
    Gaussian-weighted neighbourhood (``sigma`` voxels) is True; the mask itself for sigma 0.
    Unlike a lower threshold on probabilities it is symmetric: it removes specks and fills
    pits of the argmax masks but moves no boundary of a smooth region."""
    if sigma <= 0:
        return mask
    return ndi.gaussian_filter(mask.astype(np.float32), sigma) > 0.5


def _clean_mask(
    mask: np.ndarray, post: ClassPost, voxel_nm: float, scale: float
) -> tuple[np.ndarray, float]:
    if post.fill:
        mask = fill_holes(mask)
    radius = int(round(post.open_radius * scale))
    if radius > 0:
        mask = open_ball(mask, radius)
    r_vox = post.min_radius_nm / voxel_nm
    min_vox = 4.0 / 3.0 * math.pi * r_vox**3 if r_vox > 0 else 0
    mask, _ = remove_small(mask, min_vox)
    return mask, r_vox


def _records(ids: np.ndarray, class_id: int, name: str, cell_ids: np.ndarray | None, first: int):
    """Object records of the instance ids ``ids`` (1..n), renumbered from ``first``."""
    out = []
    for oid, sl in enumerate(ndi.find_objects(ids), start=1):
        if sl is None:
            continue
        m = ids[sl] == oid
        if cell_ids is None:  # the objects are the cells themselves
            parent = first + oid - 1
        else:
            parents = cell_ids[sl][m]
            parents = parents[parents > 0]
            parent = int(np.bincount(parents).argmax()) if parents.size else 0
        out.append(
            {"id": first + oid - 1, "class_id": class_id, "class": name, "cell": parent,
             "slice": sl, "mask": m}
        )  # fmt: skip
    return out


def postprocess(
    classes: np.ndarray, class_names: list[str], voxel_nm: float, **clean
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Nested post-processing of the predicted classes (see the module docstring):
    :func:`clean_instances` (``clean``: its ``sigma``, ``overrides``, ``scale``), then
    :func:`assemble`.

    Returns
    -------
    labels : ndarray (Z, Y, X) uint8
    objects : ndarray (Z, Y, X) int32
        Id of the innermost object at each voxel, 0 outside.
    records : list of dict
        ``id, class_id, class, cell`` (the containing cell's id), ``slice`` (bounding box) and
        ``mask`` (the object's voxels inside it).
    """
    instances = clean_instances(classes, class_names, voxel_nm, **clean)
    return assemble(instances, class_names, classes.shape)


def clean_instances(
    classes: np.ndarray,
    class_names: list[str],
    voxel_nm: float,
    *,
    sigma: float = 1.0,
    overrides: dict[str, ClassPost] | None = None,
    scale: float = 1.0,
) -> list[np.ndarray]:
    """The cleaned objects of each class, as instance ids.

    Parameters
    ----------
    classes : ndarray, shape (Z, Y, X), int
        The predicted class of each voxel (the argmax of the class probabilities); class 0 is
        background, class 1 the cell's root class.
    class_names : list of str
        The C class names (they select the :data:`DEFAULT_POST` rules).
    voxel_nm : float
        Voxel size in nm (minimum object radii are physical).
    sigma : float
        Gaussian majority vote on the argmax masks, in voxels (:func:`majority_vote`); classes
        whose rule has ``smooth=False`` (thin shells, tubules) are not voted.
    scale : float
        Voxels of ``classes`` per model voxel (model voxel size / this grid's): ``sigma`` and
        the opening radii are given in voxels of the model's training grid and scaled by it, so
        that a tomogram is cleaned alike at any voxel size.

    Returns
    -------
    list of C − 1 int32 arrays (Z, Y, X)
        For class k at index k − 1: its objects' ids (consecutive from 1, 0 outside); the cells
        (every non-background class) first, the inner classes clipped to the cells.
    """
    ncls = len(class_names)
    if classes.ndim != 3 or int(classes.max(initial=0)) >= ncls:
        raise ValueError(f"classes: expected (Z, Y, X) ids below {ncls}, got {classes.shape}")
    if voxel_nm <= 0:
        raise UserError(f"voxel size: must be > 0 nm, got {voxel_nm}")
    posts = {**DEFAULT_POST, **(overrides or {})}
    if ncls < 2:
        return []
    sigma = sigma * scale
    cell_post = posts.get(class_names[1], ClassPost())
    cell_mask, r = _clean_mask(majority_vote(classes != 0, sigma), cell_post, voxel_nm, scale)
    cell_ids = split_touching(cell_mask, r) if cell_post.split else ndi.label(cell_mask)[0]
    out = [cell_ids.astype(np.int32)]
    for k in range(2, ncls):
        post = posts.get(class_names[k], ClassPost())
        mask = majority_vote(classes == k, sigma if post.smooth else 0.0)
        mask, r = _clean_mask(mask, post, voxel_nm, scale)
        mask &= cell_mask
        ids = split_touching(mask, r) if post.split else ndi.label(mask)[0]
        out.append(ids.astype(np.int32))
    return out


def assemble(
    instances: list[np.ndarray], class_names: list[str], shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Labels, innermost-object ids and object records (see :func:`postprocess`) of the
    :func:`clean_instances` of a (Z, Y, X) grid: the cells, then each inner class painted over
    them in label-id order (inner objects clipped to the cells)."""
    labels = np.zeros(shape, np.uint8)
    objects = np.zeros(shape, np.int32)
    if not instances:
        return labels, objects, []
    cell_ids = instances[0]
    labels[cell_ids > 0] = 1
    objects[:] = cell_ids
    records = _records(cell_ids, 1, class_names[1], None, 1)
    next_id = int(cell_ids.max(initial=0)) + 1
    for k, ids in enumerate(instances[1:], start=2):
        if not ids.any():
            continue
        ids = np.where(cell_ids > 0, ids, 0)
        labels[ids > 0] = k
        recs = _records(ids, k, class_names[k], cell_ids, next_id)
        for rec in recs:
            objects[rec["slice"]][rec["mask"]] = rec["id"]
        records += recs
        next_id += int(ids.max(initial=0))
    return labels, objects, records


def measure(
    records: list[dict], volume: np.ndarray, voxel_nm: float, objects: np.ndarray | None = None
) -> list[dict]:
    """Per-object rows: volume (µm³), mean of ``volume`` (the raw input), centroid (voxels, µm).

    An object's measurements are of all its voxels; with the object-id map ``objects`` (Z, Y, X)
    a row also says how many of them carry its id there (``voxels_shown``: fewer where a later
    class is painted over it, e.g. a droplet inside a nucleus's filled holes; 0 if covered).
    """
    um = voxel_nm / 1000.0
    shown = None
    if objects is not None:
        top = max((r["id"] for r in records), default=0)
        shown = np.bincount(objects.ravel(), minlength=top + 1)
    rows = []
    for rec in records:
        m, sl = rec["mask"], rec["slice"]
        n = int(m.sum())
        zc, yc, xc = (float(c) + s.start for c, s in zip(ndi.center_of_mass(m), sl, strict=True))
        rows.append(
            {
                "id": rec["id"],
                "class_id": rec["class_id"],
                "class": rec["class"],
                "cell": rec["cell"],
                "voxels": n,
                **({} if shown is None else {"voxels_shown": int(shown[rec["id"]])}),
                "volume_um3": n * um**3,
                "mean_intensity": float(volume[sl][m].mean()) if n else float("nan"),
                "centroid_z_vox": zc,
                "centroid_y_vox": yc,
                "centroid_x_vox": xc,
                "centroid_z_um": zc * um,
                "centroid_y_um": yc * um,
                "centroid_x_um": xc * um,
            }
        )
    return rows


def write_measurements(rows: list[dict], path: str) -> None:
    cols = [
        "id", "class_id", "class", "cell", "voxels", "voxels_shown", "volume_um3", "mean_intensity",
        "centroid_z_vox", "centroid_y_vox", "centroid_x_vox",
        "centroid_z_um", "centroid_y_um", "centroid_x_um",
    ]  # fmt: skip
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def parse_min_radius(items: list[str]) -> dict[str, ClassPost]:
    """``["vacuole=80", ...]`` → overrides of the minimum radius (nm) per class name."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            v = float(value)
            if v < 0:
                raise ValueError
        except ValueError:
            raise UserError(
                f"expected CLASS=NM (>= 0), got {item!r}", param="min_radius_nm"
            ) from None
        base = DEFAULT_POST.get(name.strip(), ClassPost())
        out[name.strip()] = replace(base, min_radius_nm=v)
    return out


_FORMAT_OF = {".rec": ".mrc", ".map": ".mrc", ".st": ".mrc", ".ali": ".mrc", ".tiff": ".tif"}


def batch_outputs(inputs: list[str], out_dir: str) -> list[str]:
    """The labels path of each input in ``out_dir``: ``OUT_DIR/STEM.EXT`` in the input's own
    format (MRC for .mrc/.rec/.map/.st/.ali, TIFF, NPY). :class:`UserError` before any work for
    a missing input, an unsupported type, two inputs of one stem, or an ``out_dir`` that is a
    file or looks like one."""
    from models.volume_io import MRC_SUFFIXES, TIFF_SUFFIXES

    if os.path.isfile(out_dir) or os.path.splitext(out_dir)[1].lower() in (".tif", ".mrc", ".npy"):
        raise UserError(f"with several inputs, a directory, got {out_dir!r}", param="out")
    outputs, seen = [], {}
    for path in inputs:
        if os.path.isdir(path):  # a directory of TIFF slices
            stem, ext = os.path.basename(os.path.normpath(path)), ".tif"
        elif not os.path.isfile(path):
            raise UserError(f"no such file {path!r}", param="input_path")
        else:
            stem, ext = os.path.splitext(os.path.basename(path))
            ext = ext.lower()
        if ext not in (*MRC_SUFFIXES, *TIFF_SUFFIXES, ".npy"):
            raise UserError(f"unsupported file type {ext!r} of {path!r}", param="input_path")
        if stem in seen:
            raise UserError(
                f"{seen[stem]!r} and {path!r} would write the same {stem!r} files into "
                f"{out_dir!r}; segment them into different directories",
                param="input_path",
            )
        seen[stem] = path
        outputs.append(os.path.join(out_dir, stem + _FORMAT_OF.get(ext, ext)))
    return outputs


def segment_files(
    model_url: str | Store,
    inputs: list[str],
    out_dir: str,
    *,
    device: str | None = None,
    log=print,
    **kwargs,
) -> dict:
    """Segment several tomograms with one checkpoint, loaded once (:func:`segment_file` with
    ``kwargs`` for each; outputs in ``out_dir`` by :func:`batch_outputs`).

    A tomogram refused for bad input (no voxel size, unreadable, ...) is reported and skipped;
    the others are segmented. Writes ``OUT_DIR/measurements.csv`` (every object of every
    tomogram, with its ``tomogram``) and ``OUT_DIR/summary.json`` (each input's labels, objects
    count and voxel size, or its error). Returns that summary.
    """
    import torch

    from models.infer import load_checkpoint

    outputs = batch_outputs(inputs, out_dir)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, state = load_checkpoint(model_url, map_location=dev)
    model.to(dev)
    os.makedirs(out_dir, exist_ok=True)
    done, failed = [], []
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True), start=1):
        log(f"[{i}/{len(inputs)}] {src}")
        try:
            res = segment_file(
                model_url, src, dst, device=dev, log=log, loaded=(model, state), **kwargs
            )
        except UserError as err:
            message = err.for_cli({"input_path": "INPUT", "path": "INPUT"})
            failed.append({"input": src, "error": message})
            log(f"[{i}/{len(inputs)}] {src}: skipped: {message}")
            continue
        done.append({k: res[k] for k in ("input", "labels", "csv", "num_objects", "voxel_nm")})
    summary = {"checkpoint": state.get("path"), "out": out_dir, "segmented": done,
               "failed": failed}  # fmt: skip
    _merge_measurements(done, os.path.join(out_dir, "measurements.csv"))
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def _merge_measurements(done: list[dict], path: str) -> None:
    """One CSV of every segmented tomogram's objects, its ``tomogram`` (input path) first."""
    header, rows = None, []
    for rec in done:
        with open(rec["csv"], newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            cols = next(reader)
            header = header or ["tomogram", *cols]
            rows += [[rec["input"], *row] for row in reader]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header or ["tomogram"])
        w.writerows(rows)


def clean_on_coarser_grid(
    probs: np.ndarray,
    info: dict,
    order: str,
    names: list[str],
    voxel_nm: float,
    *,
    sigma: float,
    overrides: dict[str, ClassPost],
    always_input: bool = False,
) -> tuple[list[np.ndarray], str]:
    """:func:`clean_instances` of the model-grid probabilities ``probs`` (C, Z', Y', X'), in the
    (Z, Y, X) order, on the coarser of the model's grid and the input's (``info`` of
    :func:`models.infer.predict_at_model_scale`; ``voxel_nm``: the input's), returned as
    instance ids on the input grid in the file's axis order ``order``, and the grid used
    (``"model"`` or ``"input"``).

    A tomogram finer than the model's grid is cleaned on the model's grid, where the network's
    decisions live, and the objects are brought up to the input grid with smooth surfaces
    (:func:`models.infer.upsample_instances`): cleaning it at its own voxel size would scale
    every radius by the zoom and cost zoom³ more voxels, minutes where this takes seconds.
    ``always_input`` cleans on the input grid whatever the zoom (the benchmark's peer,
    ``bench/segment_scale.py``).
    """
    from factory.tomo.axes import file_shape, from_zyx
    from models.infer import upsample_argmax, upsample_instances

    input_shape = tuple(file_shape(info["input_shape"], order))
    zoom = float(info["zoom"])
    if zoom < 1 and not always_input:
        classes = from_zyx(probs.argmax(0).astype(np.uint8), order)
        model_nm = float(info["model_voxel_nm"])
        kept = clean_instances(classes, names, model_nm, sigma=sigma, overrides=overrides)
        return [upsample_instances(ids, input_shape) for ids in kept], "model"
    classes = from_zyx(upsample_argmax(probs, tuple(info["input_shape"])), order)
    kept = clean_instances(
        classes, names, voxel_nm, sigma=sigma, overrides=overrides, scale=1.0 / zoom
    )
    return kept, "input"


def output_paths(output: str) -> tuple[str, str, str, str]:
    """``(labels, objects, csv, json)`` paths for ``OUTPUT``."""
    stem, ext = os.path.splitext(str(output))
    if ext.lower() not in (".tif", ".tiff", ".mrc", ".npy"):
        raise UserError(f"use a .tif, .tiff, .mrc or .npy file name, got {output!r}", param="out")
    return str(output), f"{stem}_objects{ext}", f"{stem}.csv", f"{stem}.json"


def segment_file(
    model_url: str | Store,
    input_path: str,
    output: str,
    *,
    voxel_nm: float | None = None,
    fov: str = "cylinder",
    batch_size: int = 16,
    device: str | None = None,
    sigma: float = 1.0,
    min_radius: list[str] | None = None,
    progress: bool = False,
    log=print,
    tta: bool = False,
    axes: str = "auto",
    post_grid: str = "coarser",
    polarity: str = "as-is",
    warn=None,
    loaded: tuple | None = None,
) -> dict:
    """Segment one tomogram file with a checkpoint (``loaded``: its ``(model, state)`` already
    on ``device``, as :func:`segment_files` passes it); write labels, objects, measurements and
    ``OUTPUT_STEM.json`` (the voxel sizes, grids and axis order used).

    The input's voxel size (nm) is ``voxel_nm``, else its header's; its axis order is ``axes``
    (:mod:`factory.tomo.axes`: ``"auto"`` detects it), its intensity polarity ``polarity``
    (:mod:`models.polarity`; ``warn`` gets a line when the one used is not the one detected).
    The prediction runs in the (Z, Y, X) order
    at the model's training voxel size (:func:`models.infer.predict_at_model_scale`), the
    post-processing on the coarser of the two grids (``post_grid="coarser"``,
    :func:`clean_on_coarser_grid`; ``"input"``: always the input's), and everything written is on
    the input grid, in the input's voxel size and axis order.
    """
    import torch

    from factory.tomo.axes import file_shape, to_zyx
    from models.infer import load_checkpoint, predict_at_model_scale
    from models.polarity import disagreement, parse_polarity

    paths = output_paths(output)
    if fov not in ("cylinder", "all"):
        raise UserError(f"expected 'cylinder' or 'all', got {fov!r}", param="fov")
    polarity = parse_polarity(polarity)
    if post_grid not in ("coarser", "input"):
        raise UserError(f"expected 'coarser' or 'input', got {post_grid!r}", param="post_grid")
    overrides = parse_min_radius(min_radius or [])
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if loaded is None:
        model, state = load_checkpoint(model_url, map_location=dev)
        model.to(dev)
    else:
        model, state = loaded
    raw, header, vnm, source, order, axes_info = read_tomogram(input_path, voxel_nm, axes)
    probs, info = predict_at_model_scale(
        model, state, to_zyx(raw, order), vnm, fov=fov, batch_size=batch_size, device=dev,
        progress=progress, tta=tta, polarity=polarity,
    )  # fmt: skip
    warning = disagreement(info["polarity"])
    if warning:
        (warn or (lambda m: print(m, file=sys.stderr)))(warning)
    names = [c["name"] for c in sorted(state["labels"]["classes"], key=lambda c: c["id"])]
    instances, cleaned_on = clean_on_coarser_grid(
        probs, info, order, names, vnm, sigma=sigma, overrides=overrides,
        always_input=post_grid == "input",
    )  # fmt: skip
    del probs
    labels, objects, records = assemble(instances, names, raw.shape)
    del instances
    rows = measure(records, raw, vnm, objects)
    write_outputs(paths, labels, objects, rows, vnm, header)
    result = {
        "input": str(input_path),
        "checkpoint": state.get("path"),
        **info,
        "input_shape": file_shape(info["input_shape"], order),
        "voxel_nm": vnm,
        "voxel_source": source,
        "header_voxel_nm": list(header.voxel_nm),
        "header_note": header.note,
        **dict(zip(("labels", "objects", "csv", "json"), paths, strict=True)),
        "num_objects": len(rows),
        "voxels_per_class": {n: int((labels == k).sum()) for k, n in enumerate(names)},
        "postprocess": {"sigma": sigma, "fov": fov, "grid": cleaned_on},
        "tta": tta,
        "axes": axes_info,
    }
    with open(paths[3], "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    if header.note:
        log(f"{input_path}: {header.note}")
    log(summary_line(result, raw.shape))
    return result


def read_tomogram(path: str, voxel_nm: float | None, axes: str):
    """``(raw, header, voxel nm, its source, axis order, axes record)`` of the tomogram to
    segment (:func:`models.volume_io.read_volume`, :func:`models.volume_io.input_voxel_nm`,
    :func:`factory.tomo.axes.resolve_axes`); :class:`UserError` for NaN or infinite values."""
    from factory.tomo.axes import resolve_axes
    from models.volume_io import input_voxel_nm, read_volume

    raw, header = read_volume(path)
    if not np.isfinite(raw).all():
        raise UserError(f"INPUT: {path!r} holds NaN or infinite values")
    vnm, source = input_voxel_nm(voxel_nm, header, path)
    order, axes_info = resolve_axes(raw, axes)
    return raw, header, vnm, source, order, axes_info


def write_outputs(paths, labels, objects, rows: list[dict], voxel_nm: float, header) -> None:
    """Write the labels, object ids (uint16 when they fit), and measurements to the first three
    of :func:`output_paths`, MRC files with the tomogram's origin (``header``)."""
    from models.volume_io import write_volume

    write_volume(paths[0], labels, voxel_nm, like=header)
    obj = objects.astype(np.uint16) if objects.max(initial=0) < 65536 else objects
    write_volume(paths[1], obj, voxel_nm, like=header)
    write_measurements(rows, paths[2])


def summary_line(result: dict, shape) -> str:
    """The console line of one segmented tomogram."""
    from factory.tomo.axes import describe
    from models.polarity import describe as describe_polarity

    model_nm = result["model_voxel_nm"]
    scale = f"model {model_nm:g} nm, zoom {result['zoom']:.3g}" if model_nm else "model: unknown"
    return (
        f"segmented {result['input']} {tuple(shape)} at {result['voxel_nm']:g} nm "
        f"({result['voxel_source']}; {scale}; {describe(result['axes'])}; "
        f"{describe_polarity(result['polarity'])}): {result['num_objects']} objects → "
        f"{result['labels']}, {result['objects']}, {result['csv']}, {result['json']}"
    )
