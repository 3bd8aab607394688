"""Per-object scores (models/objects.py): ellipsoid masks, recall against contrast."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _shards import sample_meta

from models.objects import ellipsoid_mask, object_rows, recall_plot, summarize
from schemas import label_scheme, label_table
from schemas.sample import SampleMeta

NAMES = ["background", "cell", "vacuole", "lipid_droplet"]
FULL_IDS = {c["name"]: c["id"] for c in label_table()["classes"]}


def _simaq4_map() -> list[int]:
    return list(label_scheme("simaq4").lut)


def test_ellipsoid_mask_volume_and_rotation():
    shape = (40, 40, 40)
    box, m = ellipsoid_mask(shape, (20, 20, 20), (9, 6, 4))
    assert m.sum() == pytest.approx(4 / 3 * math.pi * 9 * 6 * 4, rel=0.03)
    assert m.shape == tuple(s.stop - s.start for s in box)
    # a quarter turn about Z swaps the Y and X extents
    rot = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    box_r, m_r = ellipsoid_mask(shape, (20, 20, 20), (4, 9, 2), rot)
    full = np.zeros(shape, bool)
    full[box_r] = m_r
    zs, ys, xs = np.nonzero(full)
    assert np.ptp(xs) > 2 * np.ptp(ys)


def test_ellipsoid_mask_clips_at_the_grid_edge():
    box, m = ellipsoid_mask((10, 10, 10), (0, 0, 0), (3, 3, 3))
    assert all(s.start == 0 for s in box)
    assert 0 < m.sum() < 4 / 3 * math.pi * 27 / 2  # a corner: far less than the whole ball
    _, empty = ellipsoid_mask((10, 10, 10), (50, 50, 50), (3, 3, 3))
    assert empty.sum() == 0
    lab = np.zeros((10, 10, 10), np.uint8)
    box, outside_y = ellipsoid_mask(lab.shape, (5, -9, 5), (3, 3, 3))  # outside along Y only
    assert outside_y.shape == lab[box].shape and outside_y.sum() == 0


def _scene():
    """A cell with a vacuole (found) and a droplet (missed); labels and prediction in simaq4."""
    lab = np.zeros((32, 32, 32), np.uint8)
    lab[4:28, 4:28, 4:28] = 1
    objs = [
        {"class": "cell", "cell": 0, "lac_per_um": 0.35, "centre_vox": [16, 16, 16],
         "radii_vox": [12, 12, 12]},
        {"class": "vacuole", "cell": 0, "lac_per_um": 0.18, "centre_vox": [12, 12, 12],
         "radii_vox": [4, 4, 4]},
        {"class": "lipid_droplet", "cell": 0, "lac_per_um": 0.37, "centre_vox": [21, 21, 21],
         "radii_vox": [2.5, 2.5, 2.5]},
        {"class": "mitochondrion", "cell": 0, "lac_per_um": 0.4},
    ]  # fmt: skip
    for o, k in ((objs[1], 2), (objs[2], 3)):
        box, m = ellipsoid_mask(lab.shape, o["centre_vox"], o["radii_vox"])
        lab[box][m] = k
    pred = lab.copy()
    pred[pred == 3] = 1  # the low-contrast droplet is missed
    return pred, lab, SampleMeta.parse(sample_meta(7, objs))


def test_object_rows_recall_and_contrast():
    pred, lab, meta = _scene()
    rows = object_rows(pred, lab, meta, NAMES, FULL_IDS, _simaq4_map())
    by = {r["class"]: r for r in rows}
    assert set(by) == {"vacuole", "lipid_droplet"}  # cells and tubes are not scored
    assert by["vacuole"]["recall"] == 1.0 and by["vacuole"]["sample"] == 7
    assert by["vacuole"]["contrast_per_um"] == pytest.approx(-0.17)
    assert by["lipid_droplet"]["recall"] == 0.0
    assert by["lipid_droplet"]["confused_with"] == "cell"
    s = summarize(rows)
    assert s["lipid_droplet"]["by_contrast"][0]["objects"] == 1  # |0.02| < 0.05
    assert s["lipid_droplet"]["by_contrast"][0]["mean_recall"] == 0.0
    assert s["vacuole"]["by_contrast"][3]["mean_recall"] == 1.0  # |0.17| in [0.15, 0.2)


def test_object_rows_skip_objects_outside_the_labels(tmp_path):
    pred, lab, meta = _scene()
    far = {"class": "nucleus", "cell": 0, "lac_per_um": 0.24, "centre_vox": [90, 90, 90],
           "radii_vox": [5, 5, 5]}  # fmt: skip
    meta = SampleMeta.parse({**meta.to_json(), "objects": [*meta.to_json()["objects"], far]})
    rows = object_rows(pred, lab, meta, NAMES, FULL_IDS, _simaq4_map())
    assert "nucleus" not in {r["class"] for r in rows}
    empty = SampleMeta.parse(sample_meta(1))
    assert object_rows(pred, lab, empty, NAMES, FULL_IDS, _simaq4_map()) == []
    recall_plot(rows, str(tmp_path / "o.png"))
    assert (tmp_path / "o.png").stat().st_size > 1000
