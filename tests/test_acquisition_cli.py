"""``simaq simulate`` end to end: real phantom, acquisition and reconstruction, real files."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import tifffile
from _cli import stage_app
from typer.testing import CliRunner

from factory.acquisition.cli import register


def _small(n: int = 32) -> list[str]:
    return [
        "--set", f"grid.shape=[{n},{n},{n}]",
        "--set", "acquisition.tilt.step_deg=4",
        "--set", "acquisition.fiducials.enabled=false",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["tiff", "mrc"])
def test_simulate_writes_volumes_meta_and_montage(tmp_path, fmt):
    if not hasattr(pytest.importorskip("factory.phantom"), "generate_phantom"):
        pytest.skip("factory.phantom.generate_phantom (the phantom stage) is not there yet")
    out = tmp_path / "sample"
    args = ["simulate", "--preset", "demo", "--seed", "3", "--index", "1", "--out", str(out),
            "--format", fmt, *_small()]  # fmt: skip
    res = CliRunner().invoke(stage_app(register), args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    ext = "tif" if fmt == "tiff" else "mrc"
    arrays = {}
    for name in ("phantom", "labels", "sinogram", "recon"):
        path = out / f"{name}.{ext}"
        assert path.is_file()
        if fmt == "tiff":
            arrays[name] = tifffile.imread(path)
        else:
            with mrcfile.open(path, permissive=False) as mrc:
                arrays[name] = np.asarray(mrc.data)
                assert abs(float(mrc.voxel_size.x) - 600.0) < 1e-3  # 60 nm in Å
    assert arrays["phantom"].shape == (32, 32, 32) and arrays["recon"].shape == (32, 32, 32)
    assert arrays["sinogram"].shape[1:] == (32, 32)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["index"] == 1
    assert meta["acquisition"]["tilt"]["n_projections"] == arrays["sinogram"].shape[0]
    assert meta["reconstruction"]["normalize"] == "quantile"
    png = (out / "montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_simulate_bad_input_names_the_field(tmp_path):
    from factory.errors import UserError

    app = stage_app(register)
    res = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path)])
    assert isinstance(res.exception, UserError) and "--preset" in str(res.exception)
    res = CliRunner().invoke(
        app, ["simulate", "--preset", "demo", "--out", str(tmp_path), "--format", "png"]
    )
    assert isinstance(res.exception, UserError) and "--format" in str(res.exception)
    res = CliRunner().invoke(
        app,
        ["simulate", "--preset", "demo", "--out", str(tmp_path),
         "--set", "acquisition.noise.photons_per_pixel=0"],
    )  # fmt: skip
    assert isinstance(res.exception, UserError) and "photons_per_pixel" in str(res.exception)
