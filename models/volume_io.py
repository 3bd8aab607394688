"""Reading tomograms and writing label volumes: MRC (``mrcfile``), TIFF (``tifffile``), NPY.

Arrays are (Z, Y, X) as stored (MRC: sections × rows × columns; TIFF: pages × rows × columns).
Voxel sizes are in nm (MRC headers store Å). NPY files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np

from factory.errors import UserError

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".st", ".ali")
TIFF_SUFFIXES = (".tif", ".tiff")
# A header voxel size below this is not a soft X-ray tomogram's (zone plates resolve ~10 nm); IMOD
# and other tools write 1 Å when the size is unknown.
MIN_HEADER_VOXEL_NM = 1.0
# relative difference between axes' voxel sizes taken as float noise in a header, not anisotropy
ANISOTROPY_TOLERANCE = 0.01


@dataclass(frozen=True)
class VolumeHeader:
    """What a file records about its grid.

    Attributes
    ----------
    voxel_nm : tuple of 3 (float or None)
        Voxel size in nm along the file's axes as stored (sections, rows, columns: MRC z, y, x),
        None where the file records none.
    note : str or None
        Set when the header does not follow its format's standard and was read leniently (an
        MRC file without the ``MAP`` identifier or machine stamp, as older writers leave them).
    origin_a : tuple of 3 floats or None
        MRC: the header's ``origin`` (x, y, z, Å), where viewers (ChimeraX, IMOD) place the
        volume; copied to label volumes written for it so that they overlay.
    start : tuple of 3 ints or None
        MRC: ``nxstart, nystart, nzstart`` (the first column, row, section in the full map).
    """

    voxel_nm: tuple[float | None, float | None, float | None] = (None, None, None)
    note: str | None = None
    origin_a: tuple[float, float, float] | None = None
    start: tuple[int, int, int] | None = None

    @property
    def recorded(self) -> list[float]:
        """The recorded voxel sizes (nm), in file order."""
        return [float(v) for v in self.voxel_nm if v]


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


def _tiff_resolution_nm(page, unit_nm: float | None) -> tuple[float | None, float | None]:
    """``(Y, X)`` pixel size in nm from a TIFF page's resolution tags (pixels per unit), None
    where unrecorded (tifffile reports an absent tag as 1 pixel per unit)."""
    try:
        res_x, res_y = (float(r) for r in page.resolution)
        res_unit = int(page.resolutionunit)
    except (AttributeError, TypeError, ValueError, IndexError, ZeroDivisionError):
        return None, None
    scale = unit_nm if unit_nm is not None else _RESUNIT_NM.get(res_unit)
    if scale is None:
        return None, None
    return tuple(scale / r if r > 0 and r != 1.0 else None for r in (res_y, res_x))


def tiff_voxel_sizes(tif) -> tuple[float | None, float | None, float | None]:
    """Voxel size (nm) along (pages, rows, columns) recorded in an open
    :class:`tifffile.TiffFile`, None where unrecorded.

    Rows and columns come from the Y and X resolution tags (pixels per unit) with the unit of the
    ImageJ or tifffile metadata (``unit``: um, nm, ...) or of the ResolutionUnit tag (inch, cm);
    pages from the ImageJ/tifffile ``spacing`` (the Z step, in ``unit``). A file that records
    only one of them is taken as cubic.
    """
    meta = tif.imagej_metadata or (tif.shaped_metadata or [None])[0] or {}
    unit_nm = _unit_nm(meta.get("unit"))
    y, x = _tiff_resolution_nm(tif.pages[0], unit_nm)
    spacing = meta.get("spacing")
    z = None
    if unit_nm is not None and isinstance(spacing, (int, float)) and spacing > 0:
        z = float(spacing) * unit_nm
    return z, y, x


def _read_tiff(path: str) -> tuple[np.ndarray, VolumeHeader]:
    import tifffile

    with _quiet_logger("tifffile") as messages:
        with tifffile.TiffFile(path) as tif:
            vol = tif.asarray()
            sizes = tiff_voxel_sizes(tif)
    damage = [m for m in messages if any(k in m.lower() for k in _TIFF_DAMAGE)]
    if damage:
        raise ValueError(f"truncated or corrupt TIFF: {damage[0].split('> ')[-1]}")
    return vol, VolumeHeader(sizes)


def tiff_slices(path: str) -> list[str]:
    """The .tif/.tiff files of a directory in natural order (``slice_2`` before ``slice_10``)."""
    import re

    names = [n for n in os.listdir(path) if _suffix(n) in TIFF_SUFFIXES]
    key = [(re.sub(r"\d+", lambda m: f"{int(m[0]):012d}", n.lower()), n) for n in names]
    return [os.path.join(path, n) for _, n in sorted(key)]


def _read_tiff_dir(path: str) -> tuple[np.ndarray, VolumeHeader]:
    """A directory of 2D TIFF slices (as tomopy/dxchange and many reconstruction programs write
    them), stacked as sections in natural file-name order; the pixel size from the first."""
    import tifffile

    files = tiff_slices(path)
    if not files:
        raise ValueError("no .tif or .tiff files in the directory")
    with _quiet_logger("tifffile"):
        with tifffile.TiffFile(files[0]) as tif:
            first = tif.asarray()
            _, y, x = tiff_voxel_sizes(tif)
        if first.ndim != 2:
            raise ValueError(f"{os.path.basename(files[0])} is not a 2D slice ({first.shape})")
        vol = np.empty((len(files), *first.shape), first.dtype)
        vol[0] = first
        for k, f in enumerate(files[1:], start=1):
            img = tifffile.imread(f)
            if img.shape != first.shape or img.dtype != first.dtype:
                raise ValueError(
                    f"{os.path.basename(f)} is {img.shape} {img.dtype}, the first slice "
                    f"{first.shape} {first.dtype}"
                )
            vol[k] = img
    return vol, VolumeHeader((None, y, x), note=f"{len(files)} TIFF slices read as sections")


# what a strict read refuses that IMOD, ImageJ and Chimera read anyway: the MRC2000 stamps, which
# older writers (and some current ones) leave blank
_LENIENT_MRC = ("map id", "machine stamp")


def _mrc_voxel_nm(mrc) -> tuple[float | None, float | None, float | None]:
    vs = mrc.voxel_size  # Å along x, y, z (cella / mx, my, mz)
    return tuple(float(v) / 10.0 if v > 0 else None for v in (vs.z, vs.y, vs.x))


# IMOD's header stamp (bytes 152-155) and flags (156-159; bit 0: bytes are signed), in ``extra2``
IMOD_STAMP = 1146047817


def imod_unsigned_bytes(header) -> bool:
    """True for an IMOD-stamped MRC header whose flags say mode-0 bytes are unsigned (IMOD's
    convention, e.g. ``trimvol``'s byte output), which MRC2014 readers take as signed."""
    stamp, flags = np.frombuffer(bytes(header.extra2)[40:48], dtype=header.mode.dtype)
    return int(stamp) == IMOD_STAMP and not int(flags) & 1


def _open_mrc(path: str, permissive: bool) -> tuple[np.ndarray | None, dict]:
    import mrcfile

    with mrcfile.open(path, mode="r", permissive=permissive) as mrc:
        data = None if mrc.data is None else np.asarray(mrc.data)  # read-only
        h = mrc.header
        if data is not None and data.dtype == np.int8 and imod_unsigned_bytes(h):
            data = data.view(np.uint8)  # 200 stored as byte 200, not −56
        grid = {
            "voxel_nm": _mrc_voxel_nm(mrc),
            "origin_a": tuple(float(v) for v in (h.origin.x, h.origin.y, h.origin.z)),
            "start": tuple(int(v) for v in (h.nxstart, h.nystart, h.nzstart)),
        }
        return data, grid


def _read_mrc(path: str) -> tuple[np.ndarray, VolumeHeader]:
    """Strict read (mrcfile raises what it would warn about); a file refused only for its MAP
    identifier or machine stamp is read leniently, when its data block has exactly the size its
    header gives, and the header's :attr:`VolumeHeader.note` says so."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vol, grid = _open_mrc(path, permissive=False)
            note = None
        except ValueError as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            if not any(k in reason.lower() for k in _LENIENT_MRC):
                raise
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                vol, grid = _open_mrc(path, permissive=True)
            others = [str(w.message) for w in caught]
            others = [m for m in others if not any(k in m.lower() for k in _LENIENT_MRC)]
            if vol is None or others:
                raise ValueError(f"{reason}; {others[0] if others else 'no data block'}") from None
            note = f"MRC header read leniently ({reason})"
    if vol is None:
        raise ValueError("no data block")
    return vol, VolumeHeader(note=note, **grid)


def read_volume(path: str, param: str = "path") -> tuple[np.ndarray, VolumeHeader]:
    """Read a tomogram or a label volume.

    Parameters
    ----------
    path : str
        MRC (``.mrc .rec .map .st .ali``), TIFF (``.tif .tiff``) or NPY file, or a directory
        of 2D TIFF slices (sections, in natural file-name order).
    param : str
        The caller's parameter that named the file, for error messages (:class:`UserError`
        ``param``: the CLI shows its flag).

    Returns
    -------
    volume : ndarray, shape (Z, Y, X)
        As stored (integer or float dtype).
    header : VolumeHeader
        Voxel sizes in nm along the file's axes (MRC: Å / 10; TIFF: :func:`tiff_voxel_sizes`;
        NPY: none) and a note when an MRC header was read leniently.

    Raises
    ------
    UserError
        One line naming the file and what is wrong: missing, unsupported type, unreadable,
        truncated or corrupt (tifffile's log records are collected, not printed), not 3D,
        unsupported dtype.
    """
    path = str(path)
    if os.path.isdir(path):
        suf = "dir"
    elif not os.path.isfile(path):
        raise UserError(f"no such file {path!r}", param=param)
    else:
        suf = _suffix(path)
    readers = {**dict.fromkeys(MRC_SUFFIXES, _read_mrc), **dict.fromkeys(TIFF_SUFFIXES, _read_tiff)}
    readers[".npy"] = lambda p: (np.load(p, allow_pickle=False), VolumeHeader())
    readers["dir"] = _read_tiff_dir
    if suf not in readers:
        raise UserError(
            f"unsupported file type {suf!r} of {path!r} "
            f"(use {', '.join(MRC_SUFFIXES + TIFF_SUFFIXES)}, .npy or a directory of TIFF slices)",
            param=param,
        )
    try:
        vol, header = readers[suf](path)
    except Exception as err:  # noqa: BLE001 - readers raise many kinds
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot read {path!r} ({type(err).__name__}: {msg})", param=param
        ) from None
    if vol.ndim != 3:
        raise UserError(f"expected a 3D volume, got shape {vol.shape} in {path!r}", param=param)
    if vol.dtype.kind not in "uif":
        raise UserError(f"unsupported dtype {vol.dtype} in {path!r}", param=param)
    return vol, header


def input_voxel_nm(
    given: float | None, header: VolumeHeader, path: str, param: str = "voxel_nm"
) -> tuple[float, str]:
    """``(voxel size in nm, where it came from: "given" or "file header")``.

    ``given`` (the ``param`` option) wins. Else the header's, which must be recorded, cubic
    (axes within :data:`ANISOTROPY_TOLERANCE`; the pipeline resamples and measures with one
    size) and at least :data:`MIN_HEADER_VOXEL_NM` (1 Å is what IMOD writes for "unknown").
    Anything else is a :class:`UserError` of one line that asks for ``param``.
    """
    if given is not None:
        if not (np.isfinite(given) and given > 0):
            raise UserError(f"must be a positive number of nm, got {given}", param=param)
        return float(given), "given"
    sizes = header.recorded
    if not sizes:
        raise UserError(f"{path!r} records no voxel size; pass `{param}` NM", param=param)
    small = min(sizes)
    if small < MIN_HEADER_VOXEL_NM:
        unset = (
            " (1 Å: what IMOD and others write when the size is unknown)" if small == 0.1 else ""
        )
        raise UserError(
            f"{path!r} records a voxel size of {small:g} nm{unset}, not a soft X-ray "
            f"tomogram's; pass `{param}` NM",
            param=param,
        )
    if max(sizes) > small * (1 + ANISOTROPY_TOLERANCE):
        shown = " × ".join("?" if not v else f"{v:g}" for v in header.voxel_nm)
        raise UserError(
            f"{path!r} records voxel sizes that differ between axes ({shown} nm, file order); "
            f"anisotropic voxels are not supported: resample it to cubic voxels, or pass "
            f"`{param}` NM to take one size for all axes",
            param=param,
        )
    return sizes[-1], "file header"


def write_volume(
    path: str, volume: np.ndarray, voxel_nm: float | None = None, like: VolumeHeader | None = None
) -> None:
    """Write an integer (label) volume as MRC or TIFF (by suffix), or NPY; an MRC file takes the
    origin and start indices of ``like`` (the tomogram it labels), so that viewers overlay it."""
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
            if like is not None and like.origin_a is not None:
                mrc.header.origin = like.origin_a
            if like is not None and like.start is not None:
                h = mrc.header
                h.nxstart, h.nystart, h.nzstart = like.start
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
