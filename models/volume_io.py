"""Reading tomograms and writing label volumes: MRC (``mrcfile``), TIFF (``tifffile``), NPY.

Arrays are (Z, Y, X) as stored (MRC: sections × rows × columns; TIFF: pages × rows × columns).
Voxel sizes are in nm (MRC headers store Å). NPY files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import numpy as np

from factory.errors import UserError

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".st", ".ali")
TIFF_SUFFIXES = (".tif", ".tiff")


def _suffix(path: str) -> str:
    return os.path.splitext(str(path))[1].lower()


_UNIT_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "\\u00b5m": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "mm": 1e6,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
}
# TIFF ResolutionUnit: 2 inch, 3 centimetre (in nm)
_RESUNIT_NM = {2: 2.54e7, 3: 1e7}
# what tifffile logs (instead of raising) when it meets a truncated or damaged file
_TIFF_DAMAGE = ("offset", "corrupt", "truncat", "failed to read", "unexpected end")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Collect the records of logger ``name`` instead of letting them reach stderr."""
    lg = logging.getLogger(name)
    handler = _Collect()
    old = (lg.handlers[:], lg.propagate, lg.level)
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    try:
        yield handler.messages
    finally:
        lg.handlers[:], lg.propagate = old[0], old[1]
        lg.setLevel(old[2])


def _unit_nm(unit) -> float | None:
    if not isinstance(unit, str):
        return None
    return _UNIT_NM.get(unit.strip().lower())


def tiff_voxel_nm(tif) -> float | None:
    """Voxel size (nm) recorded in an open :class:`tifffile.TiffFile`, or None.

    The in-plane pixel size comes from the X resolution tag (pixels per unit) with the unit of
    the ImageJ or tifffile metadata (``unit``: um, nm, ...) or of the ResolutionUnit tag (inch,
    cm); else the ImageJ/tifffile ``spacing`` (the Z step) is used. Volumes are taken as
    isotropic.
    """
    meta = tif.imagej_metadata or (tif.shaped_metadata or [None])[0] or {}
    unit_nm = _unit_nm(meta.get("unit"))
    page = tif.pages[0]
    try:
        res_x = float(page.resolution[0])
        res_unit = int(page.resolutionunit)
    except (AttributeError, TypeError, ValueError, IndexError, ZeroDivisionError):
        res_x, res_unit = 0.0, 1
    scale = unit_nm if unit_nm is not None else _RESUNIT_NM.get(res_unit)
    if scale is not None and res_x > 0 and res_x != 1.0:
        return scale / res_x
    spacing = meta.get("spacing")
    if unit_nm is not None and isinstance(spacing, (int, float)) and spacing > 0:
        return float(spacing) * unit_nm
    return None


def _read_tiff(path: str) -> tuple[np.ndarray, float | None]:
    import tifffile

    with _quiet_logger("tifffile") as messages:
        with tifffile.TiffFile(path) as tif:
            vol = tif.asarray()
            voxel_nm = tiff_voxel_nm(tif)
    damage = [m for m in messages if any(k in m.lower() for k in _TIFF_DAMAGE)]
    if damage:
        raise ValueError(f"truncated or corrupt TIFF: {damage[0].split('> ')[-1]}")
    return vol, voxel_nm


def _read_mrc(path: str) -> tuple[np.ndarray, float | None]:
    import mrcfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # permissive=False raises what it would warn about
        with mrcfile.open(path, mode="r", permissive=False) as mrc:
            if mrc.data is None:
                raise ValueError("no data block")
            vol = np.asarray(mrc.data)  # read-only; consumers copy or np.require
            vs = float(mrc.voxel_size.x)
    return vol, (vs / 10.0 if vs > 0 else None)  # header in Å


def read_volume(path: str, param: str = "path") -> tuple[np.ndarray, float | None]:
    """Read a tomogram or a label volume.

    Parameters
    ----------
    path : str
        MRC (``.mrc .rec .map .st .ali``), TIFF (``.tif .tiff``) or NPY file.
    param : str
        The caller's parameter that named the file, for error messages (:class:`UserError`
        ``param``: the CLI shows its flag).

    Returns
    -------
    volume : ndarray, shape (Z, Y, X)
        As stored (integer or float dtype).
    voxel_nm : float or None
        Voxel size in nm from the header (MRC: Å / 10; TIFF: :func:`tiff_voxel_nm`), None if
        the file records none.

    Raises
    ------
    UserError
        One line naming the file and what is wrong: missing, unsupported type, unreadable,
        truncated or corrupt (tifffile's log records are collected, not printed), not 3D,
        unsupported dtype.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"no such file {path!r}", param=param)
    suf = _suffix(path)
    readers = {**dict.fromkeys(MRC_SUFFIXES, _read_mrc), **dict.fromkeys(TIFF_SUFFIXES, _read_tiff)}
    readers[".npy"] = lambda p: (np.load(p, allow_pickle=False), None)
    if suf not in readers:
        raise UserError(
            f"unsupported file type {suf!r} of {path!r} "
            f"(use {', '.join(MRC_SUFFIXES + TIFF_SUFFIXES)} or .npy)",
            param=param,
        )
    try:
        vol, voxel_nm = readers[suf](path)
    except Exception as err:  # noqa: BLE001 - readers raise many kinds
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot read {path!r} ({type(err).__name__}: {msg})", param=param
        ) from None
    if vol.ndim != 3:
        raise UserError(f"expected a 3D volume, got shape {vol.shape} in {path!r}", param=param)
    if vol.dtype.kind not in "uif":
        raise UserError(f"unsupported dtype {vol.dtype} in {path!r}", param=param)
    return vol, voxel_nm


def input_voxel_nm(given: float | None, header: float | None, path: str) -> tuple[float, str]:
    """``(voxel size in nm, where it came from: "given" or "file header")``: ``given`` if not None,
    else the file header's; raises :class:`UserError` (one line, asking for ``voxel_nm``) when
    neither is known."""
    if given is not None:
        if not given > 0:
            raise UserError(f"must be > 0, got {given}", param="voxel_nm")
        return float(given), "given"
    if header:
        return float(header), "file header"
    raise UserError(f"{path!r} records no voxel size; pass `voxel_nm` NM", param="voxel_nm")


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
