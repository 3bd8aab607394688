"""Reading tomograms and writing label volumes: MRC (``mrcfile``), TIFF (``tifffile``), NPY.

Arrays are (Z, Y, X) as stored (MRC: sections × rows × columns; TIFF: pages × rows × columns).
Voxel sizes are in nm (MRC headers store Å). NPY files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os

import numpy as np

from factory.errors import UserError

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".st", ".ali")
TIFF_SUFFIXES = (".tif", ".tiff")


def _suffix(path: str) -> str:
    return os.path.splitext(str(path))[1].lower()


def read_volume(path: str, what: str = "INPUT") -> tuple[np.ndarray, float | None]:
    """``(volume (Z, Y, X), voxel_nm or None)`` of an MRC, TIFF or NPY file."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{what}: no such file {path!r}")
    suf = _suffix(path)
    voxel_nm = None
    try:
        if suf in MRC_SUFFIXES:
            import mrcfile

            with mrcfile.open(path, mode="r", permissive=False) as mrc:
                vol = np.asarray(mrc.data)
                vs = float(mrc.voxel_size.x)
                voxel_nm = vs / 10.0 if vs > 0 else None  # header in Å
        elif suf in TIFF_SUFFIXES:
            import tifffile

            vol = tifffile.imread(path)
        elif suf == ".npy":
            vol = np.load(path, allow_pickle=False)
        else:
            raise UserError(
                f"{what}: unsupported file type {suf!r} of {path!r} "
                f"(use {', '.join(MRC_SUFFIXES + TIFF_SUFFIXES)} or .npy)"
            )
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - readers raise many kinds
        raise UserError(f"{what}: cannot read {path!r} ({type(err).__name__}: {err})") from None
    if vol.ndim != 3:
        raise UserError(f"{what}: expected a 3D volume, got shape {vol.shape} in {path!r}")
    if vol.dtype.kind not in "uif":
        raise UserError(f"{what}: unsupported dtype {vol.dtype} in {path!r}")
    return vol, voxel_nm


def write_volume(path: str, volume: np.ndarray, voxel_nm: float | None = None) -> None:
    """Write an integer (label) volume as MRC or TIFF (by suffix), or NPY."""
    path = str(path)
    suf = _suffix(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    vol = np.ascontiguousarray(volume)
    if suf in MRC_SUFFIXES:
        import mrcfile

        if vol.dtype == np.uint8 and int(vol.max(initial=0)) < 128:
            vol = vol.astype(np.int8)  # MRC mode 0 (IMOD reads it as bytes)
        elif vol.dtype.kind in "iu" and vol.dtype.itemsize > 2:
            vmax = int(vol.max(initial=0))
            if vmax > np.iinfo(np.uint16).max:
                raise UserError(f"OUTPUT: {vmax} labels do not fit an MRC file (uint16)")
            vol = vol.astype(np.uint16)
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(vol)
            if voxel_nm:
                mrc.voxel_size = float(voxel_nm) * 10.0  # Å
    elif suf in TIFF_SUFFIXES:
        import tifffile

        if vol.dtype.kind in "iu" and vol.dtype.itemsize > 2 and int(vol.max(initial=0)) < 65536:
            vol = vol.astype(np.uint16)
        kwargs = {}
        if voxel_nm:
            um = float(voxel_nm) / 1000.0
            kwargs = {
                "resolution": (1.0 / um, 1.0 / um),
                "metadata": {"spacing": um, "unit": "um", "axes": "ZYX"},
            }
        tifffile.imwrite(path, vol, imagej=vol.dtype in (np.uint8, np.uint16), **kwargs)
    elif suf == ".npy":
        np.save(path, vol, allow_pickle=False)
    else:
        raise UserError(
            f"OUTPUT: unsupported file type {suf!r} of {path!r} (use .tif, .tiff, .mrc or .npy)"
        )
