"""factory/tomo/axes.py: axis orders, their views, and detection of the beam and tilt axes from a
reconstruction's missing wedge (grid presets) or cylinder (capillary presets), on real simulated
tomograms stored in every order."""

from __future__ import annotations

import numpy as np
import pytest

from factory.config import load_preset
from factory.errors import UserError
from factory.sample import simulate_sample
from factory.tomo.axes import (
    ORDERS,
    describe,
    detect_axes,
    file_shape,
    from_zyx,
    parse_axes,
    resolve_axes,
    to_zyx,
)


@pytest.fixture(scope="module")
def grid_recons():
    """Two `demo` reconstructions (64³ at 60 nm, tilts within ±60°)."""
    cfg = load_preset("demo")
    return [simulate_sample(cfg, 3, i).fields["recon"] for i in (0, 1)]


@pytest.fixture(scope="module")
def capillary_recons():
    """Two `capillary-demo` reconstructions (64³ at 160 nm, full rotation, a glass capillary)."""
    cfg = load_preset("capillary-demo")
    return [simulate_sample(cfg, 3, i).fields["recon"] for i in (0, 1)]


def test_parse_axes_takes_auto_and_the_six_orders_and_names_a_bad_value():
    assert parse_axes("auto") == "auto" and parse_axes(" AUTO ") == "auto"
    assert sorted(ORDERS) == sorted(["ZYX", "ZXY", "YZX", "YXZ", "XZY", "XYZ"])
    assert parse_axes("yzx") == "YZX"
    for bad in ("ZZX", "ZY", "ABC", ""):
        with pytest.raises(UserError) as e:
            parse_axes(bad, "real_axes")
        assert e.value.param == "real_axes" and repr(bad) in e.value.message


@pytest.mark.parametrize("order", ORDERS)
def test_views_round_trip_with_leading_channels(order):
    zyx = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (C, Z, Y, X)
    stored = from_zyx(zyx, order)
    sizes = dict(zip("ZYX", (3, 4, 5), strict=True))
    assert stored.shape == (2, *(sizes[c] for c in order))
    assert np.array_equal(to_zyx(stored, order), zyx)
    assert file_shape((3, 4, 5), order) == list(stored.shape[1:])
    # the file's axis named Y is the convention's Y: plane Y = 2 holds the same values
    plane = np.take(stored[0], 2, axis=order.index("Y"))
    assert np.array_equal(np.sort(plane.ravel()), np.sort(zyx[0, :, 2].ravel()))


def test_a_grid_tomogram_is_found_in_the_orders_users_store(grid_recons):
    """ZYX (the factory's) and YZX (IMOD before `trimvol -rx`) exactly; in every order at least the
    beam axis (the missing wedge) — at 64³ the wedge's extent may not single out the tilt axis."""
    for recon in grid_recons:
        for order in ORDERS:
            guess = detect_axes(from_zyx(recon, order))
            assert guess.signature.startswith("missing wedge"), (order, guess)
            assert guess.axes.index("Z") == order.index("Z"), (order, guess)
            if order in ("ZYX", "YZX"):
                assert guess.axes == order, guess


def test_a_capillary_tomogram_gives_its_tilt_axis_in_every_order(capillary_recons):
    for recon in capillary_recons:
        for order in ORDERS:
            guess = detect_axes(from_zyx(recon, order))
            assert guess.signature == "cylinder", (order, guess)
            assert guess.axes.index("Y") == order.index("Y"), (order, guess)


def test_no_signature_no_guess():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(48, 48, 48)).astype(np.float32)
    assert detect_axes(noise).axes is None
    assert detect_axes(np.ones((40, 40, 40), np.float32)).axes is None
    assert detect_axes(noise[:, :8]).axes is None  # too thin to tell
    order, record = resolve_axes(noise, "auto")
    assert order == "ZYX" and record["source"] == "default"
    assert describe(record) == "axes ZYX (default: no missing wedge or cylinder found)"


def test_a_given_order_is_used_as_given(grid_recons):
    stored = from_zyx(grid_recons[0], "YZX")
    order, record = resolve_axes(stored, "ZYX")
    assert order == "ZYX" and record == {"given": "ZYX", "axes": "ZYX", "source": "given"}
    order, record = resolve_axes(stored, "auto")
    assert order == "YZX" and record["source"] == "detected"
    assert describe(record) == "axes YZX (detected: missing wedge)"


def test_the_detection_benchmark_runs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "axes.py"
    spec = importlib.util.spec_from_file_location("bench_axes", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--presets", "demo,capillary-demo", "--samples", "1"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("demo", "capil"))]
    assert len(rows) == 2 and all("wrong 0" in r for r in rows), rows
