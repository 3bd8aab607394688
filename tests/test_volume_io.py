"""models/volume_io.py: what real files' headers say about their grid (voxel sizes per axis, IMOD's
"unknown" 1 Å, anisotropy) and MRC files whose MRC2000 stamps are blank, read leniently."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile

from factory.errors import UserError
from models.volume_io import VolumeHeader, input_voxel_nm, read_volume, write_volume


def _mrc(path, vol, voxel_a):
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(vol, np.float32))
        mrc.voxel_size = voxel_a  # Å: one number or (x, y, z)
    return str(path)


def _blank(path, start: int, stop: int, cut: int = 0) -> str:
    raw = bytearray(open(path, "rb").read())
    raw[start:stop] = b"\0" * (stop - start)
    open(path, "wb").write(bytes(raw[: len(raw) - cut]))
    return path


@pytest.fixture
def vol():
    return np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)


def test_mrc_voxel_sizes_come_per_file_axis(tmp_path, vol):
    _, header = read_volume(_mrc(tmp_path / "a.mrc", vol, (100.0, 200.0, 300.0)))
    assert header.voxel_nm == (30.0, 20.0, 10.0)  # sections, rows, columns = z, y, x
    assert header.note is None
    _, header = read_volume(_mrc(tmp_path / "b.mrc", vol, 0.0))
    assert header.voxel_nm == (None, None, None) and header.recorded == []


@pytest.mark.parametrize(("start", "stop", "reason"), [(208, 212, "Map ID"), (212, 216, "stamp")])
def test_blank_mrc2000_stamps_are_read_with_a_note(tmp_path, vol, start, stop, reason):
    path = _blank(_mrc(tmp_path / "old.mrc", vol, 400.0), start, stop)
    got, header = read_volume(path)
    np.testing.assert_array_equal(got, vol)
    assert header.voxel_nm == (40.0, 40.0, 40.0)
    assert "read leniently" in header.note and reason in header.note


def test_a_blank_stamp_with_a_short_data_block_is_still_refused(tmp_path, vol):
    path = _blank(_mrc(tmp_path / "bad.mrc", vol, 400.0), 208, 212, cut=40)
    with pytest.raises(UserError, match="not an MRC file.*Expected") as err:
        read_volume(path, "real")
    assert err.value.param == "real"


def test_tiff_voxel_sizes_per_axis(tmp_path, vol):
    um = (0.05, 0.04, 0.03)  # spacing (Z), Y, X
    path = tmp_path / "a.tif"
    meta = {"spacing": um[0], "unit": "um", "axes": "ZYX"}
    tifffile.imwrite(path, vol, imagej=True, resolution=(1 / um[2], 1 / um[1]), metadata=meta)
    _, header = read_volume(str(path))
    assert header.voxel_nm == pytest.approx((50.0, 40.0, 30.0))
    write_volume(str(tmp_path / "b.tif"), (vol * 10).astype(np.uint8), 60.0)  # our own writer
    _, header = read_volume(str(tmp_path / "b.tif"))
    assert header.voxel_nm == pytest.approx((60.0, 60.0, 60.0))
    tifffile.imwrite(tmp_path / "c.tif", vol)  # nothing recorded
    assert read_volume(str(tmp_path / "c.tif"))[1].recorded == []


def test_input_voxel_size_from_flag_or_header():
    cubic = VolumeHeader((40.0, 40.0, 40.0))
    assert input_voxel_nm(None, cubic, "t.mrc") == (40.0, "file header")
    assert input_voxel_nm(25.0, cubic, "t.mrc") == (25.0, "given")
    assert input_voxel_nm(None, VolumeHeader((None, 40.0, 40.0)), "t.mrc") == (40.0, "file header")
    assert input_voxel_nm(None, VolumeHeader((40.2, 40.0, 40.0)), "t.mrc")[0] == 40.0  # < 1 %


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (VolumeHeader(), "records no voxel size"),
        (VolumeHeader((0.1, 0.1, 0.1)), "0.1 nm (1 Å: what IMOD and others write when"),
        (VolumeHeader((0.5, 0.5, 0.5)), "0.5 nm, not a soft X-ray tomogram's"),
        (VolumeHeader((60.0, 40.0, 40.0)), "(60 × 40 × 40 nm, file order); anisotropic"),
    ],
)
def test_header_voxel_sizes_the_pipeline_cannot_use_ask_for_the_flag(header, message):
    with pytest.raises(UserError) as err:
        input_voxel_nm(None, header, "t.mrc", "real_voxel_nm")
    assert err.value.param == "real_voxel_nm" and "'t.mrc'" in err.value.message
    assert message in err.value.message and "pass `real_voxel_nm` NM" in err.value.message
    assert input_voxel_nm(30.0, header, "t.mrc") == (30.0, "given")  # the flag settles it


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan"), float("inf")])
def test_a_bad_given_voxel_size_names_the_flag(bad):
    with pytest.raises(UserError, match="positive number of nm") as err:
        input_voxel_nm(bad, VolumeHeader(), "t.mrc", "real_voxel_nm")
    assert err.value.param == "real_voxel_nm"


def test_label_volumes_keep_the_tomograms_origin_for_overlays(tmp_path, vol):
    src = _mrc(tmp_path / "t.mrc", vol, 400.0)
    with mrcfile.open(src, mode="r+") as mrc:
        mrc.header.origin = (1200.0, -400.0, 800.0)
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = 10, 20, 30
    _, header = read_volume(src)
    assert header.origin_a == (1200.0, -400.0, 800.0) and header.start == (10, 20, 30)
    out = str(tmp_path / "labels.mrc")
    write_volume(out, (vol > 0.5).astype(np.uint8), 40.0, like=header)
    with mrcfile.open(out) as mrc:
        o = mrc.header.origin
        assert (float(o.x), float(o.y), float(o.z)) == (1200.0, -400.0, 800.0)
        assert (int(mrc.header.nxstart), int(mrc.header.nzstart)) == (10, 30)
        assert float(mrc.voxel_size.x) == pytest.approx(400.0)


@pytest.mark.parametrize(("flags", "expected"), [(0, np.uint8), (1, np.int8), (None, np.int8)])
def test_imod_byte_tomograms_are_read_unsigned_unless_flagged_signed(tmp_path, flags, expected):
    """IMOD writes mode-0 bytes unsigned (trimvol's default output) and says so in its header;
    read as MRC2014's signed bytes, 128-255 would wrap to negative and scramble the ranks."""
    from models.volume_io import IMOD_STAMP

    values = np.arange(0, 256, 8, dtype=np.uint8).reshape(2, 4, 4)
    path = str(tmp_path / "bytes.mrc")
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(values.view(np.int8))
        if flags is not None:
            extra = bytearray(bytes(mrc.header.extra2))
            extra[40:48] = np.array([IMOD_STAMP, flags], dtype="<i4").tobytes()
            mrc.header.extra2 = np.frombuffer(bytes(extra), dtype="V84")[0]
    got, _ = read_volume(path)
    assert got.dtype == expected
    np.testing.assert_array_equal(got, values.view(expected))


def test_a_directory_of_tiff_slices_reads_as_sections_in_natural_order(tmp_path, vol):
    d = tmp_path / "recon"
    d.mkdir()
    um = 0.04
    for k in range(vol.shape[0]):  # slice_1 ... slice_6, written out of order
        tifffile.imwrite(d / f"slice_{k + 1}.tiff", vol[k], resolution=(1 / um, 1 / um),
                         imagej=True, metadata={"unit": "um"})  # fmt: skip
    (d / "notes.txt").write_text("not a slice")
    got, header = read_volume(str(d))
    np.testing.assert_array_equal(got, vol)
    assert header.voxel_nm[0] is None and header.voxel_nm[1:] == pytest.approx((40.0, 40.0))
    assert "6 TIFF slices" in header.note
    assert input_voxel_nm(None, header, str(d)) == (pytest.approx(40.0), "file header")
    tifffile.imwrite(d / "slice_10.tif", vol[0, :5])  # another size
    with pytest.raises(UserError, match=r"slice_10.tif is \(5, 8\)"):
        read_volume(str(d))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no .tif or .tiff files"):
        read_volume(str(empty))
