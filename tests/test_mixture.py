"""Training on a mixture of datasets (``simaq train --data A --data B``): a grid dataset (the
session's ``small_dataset``: demo preset, 32³ at 60 nm) and a capillary dataset at the same voxel
size, read together through the real CLI and Ray Train; datasets that cannot be mixed exit 2."""

from __future__ import annotations

import json

import pytest
from _cli import error_line, run

TINY = ["--set", "features=4", "--set", "depth=2", "--batch-size", "4", "--lr", "0.01"]
SMALL = {"num_samples": 4, "shard_size": 2, "splits": {"train": 0.5, "val": 0.25, "test": 0.25}}


def _generate(out, preset: str, overrides: dict, seed: int):
    from factory.config import load_preset
    from factory.dataset.generate import generate_dataset

    generate_dataset(load_preset(preset, overrides), str(out), seed=seed, executor="local")
    return out


@pytest.fixture(scope="module")
def capillary_dataset(tmp_path_factory):
    """``capillary-60nm`` on 32³ (60 nm, full label table, like ``small_dataset``): 4 samples,
    180/360° tilt schemes (its sinograms have other shapes than the grid dataset's)."""
    mount = {"outer_diameter_fov": {"uniform": [1.2, 1.3]}, "wall_thickness_um": 0.1}
    overrides = {"grid": {"shape": [32, 32, 32]}, "labels": {"scheme": "full"}, "mount": mount}
    out = tmp_path_factory.mktemp("mix") / "cap"
    return _generate(out, "capillary-60nm", {**overrides, "dataset": SMALL}, seed=3)


def test_a_mixture_holds_the_shards_of_both_datasets(small_dataset, capillary_dataset):
    from factory.dataset.manifest import read_manifest
    from models.data import iter_volumes
    from models.train import read_datasets

    urls = [str(small_dataset), str(capillary_dataset)]
    m = read_datasets(urls)
    a, b = (read_manifest(u) for u in urls)
    assert [s.root for s in m.shards] == [urls[0]] * len(a.shards) + [urls[1]] * len(b.shards)
    assert [x["content_sha256"] for x in m.mixture] == [a.content_sha256, b.content_sha256]
    assert m.content_sha256 not in (a.content_sha256, b.content_sha256)
    sino = [a.fields["sinogram"].shape_max, b.fields["sinogram"].shape_max]
    assert sino[0] != sino[1]
    assert m.fields["sinogram"].shape_max == [max(x) for x in zip(*sino, strict=True)]
    train = [s for s in m.shards if s.split == "train"]
    seen = {meta.config_sha256 for _, _, meta in iter_volumes(urls[0], train, fields=m.fields)}
    assert seen == {a.config_sha256, b.config_sha256}


def test_training_on_a_mixture_records_both_datasets(
    monkeypatch, capsys, ray_session, small_dataset, capillary_dataset, tmp_path
):
    run_dir = tmp_path / "run"
    code, _, err = run(
        monkeypatch, capsys, "train", "--data", str(small_dataset), "--data",
        str(capillary_dataset), "--out", str(run_dir), *TINY, "--epochs", "1",
        "--steps-per-epoch", "3", "--set", "val_slices=4", "--set", "cpus_per_worker=0.5",
    )  # fmt: skip
    assert code == 0, err
    state = json.loads(next(run_dir.glob("ray/checkpoint_*/state.json")).read_text())
    mixed = state["dataset"]["mixture"]
    assert [x["url"] for x in mixed] == [str(small_dataset), str(capillary_dataset)]


def test_datasets_of_other_voxel_sizes_do_not_mix(monkeypatch, capsys, small_dataset, tmp_path):
    other = _generate(
        tmp_path / "coarse", "demo", {"grid": {"shape": [32, 32, 32], "voxel_nm": 80.0},
                                      "dataset": SMALL}, seed=5,
    )  # fmt: skip
    out = tmp_path / "run"
    code, _, err = run(
        monkeypatch, capsys, "train", "--data", str(small_dataset), "--data", str(other),
        "--out", str(out), *TINY,
    )  # fmt: skip
    line = error_line(err)
    assert code == 2 and "voxel size (nm) 80.0" in line and "60.0" in line, line
    assert not out.exists()
