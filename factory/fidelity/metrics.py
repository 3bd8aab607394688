"""Measurements of one tomogram, and the differences between two, for the fidelity report.

Array conventions: volumes are ``(Z, Y, X)`` float arrays with **Y the tilt axis** and the beam along
Z at 0°. Every spatial measurement is made in the XZ planes (perpendicular to the tilt axis), where
the missing wedge, the reconstruction filter and the depth-dependent blur act, and averaged over
up to ``max_planes`` evenly spaced Y planes; this also makes thin real volumes (a few Y rows)
usable. Frequencies are in cycles/nm, lengths in nm, angles in degrees. Intensities are on the
normalised scale of :func:`prepare_volume` (the rank normalisation of the training data), except
the histograms, which use :func:`robust_scale` (see its note).

References
----------
.. [1] R. C. Gonzalez, R. E. Woods, *Digital Image Processing*, 4th ed., ch. 4 (power spectra,
   Wiener–Khinchin: the autocorrelation is the inverse transform of the power spectrum).
.. [2] A. C. Kak, M. Slaney, *Principles of Computerized Tomographic Imaging*, ch. 3 (Fourier
   slice theorem: a projection at angle θ fills one line of the 2D transform; a limited tilt range
   ±θmax leaves a wedge of half-angle 90° − θmax around the beam axis kz empty).
.. [3] D. L. Donoho, I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage",
   Biometrika 81 (1994) 425–455 (noise sd = MAD / 0.6745 of a high-pass residual).
.. [4] H. F. Inman, E. L. Bradley, "The overlapping coefficient as a measure of agreement between
   probability distributions", Commun. Stat. Theory Methods 18 (1989) 3851–3874.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

N_BANDS = 5
ANGLE_BIN_DEG = 5.0
HIST_RANGE = (-4.0, 4.0)
HIST_BINS = 64
MAD_TO_SD = 0.6745


# --- preparation ----------------------------------------------------------------------------------


def fov_mask(shape: tuple[int, int, int], inset: float) -> np.ndarray:
    """Boolean ``(Z, 1, X)`` mask of the field-of-view cylinder around Y.

    Radius ``min(Z, X) / 2 − inset`` voxels about ``((Z − 1)/2, (X − 1)/2)``, as
    :func:`factory.acquisition.volume.cylinder_mask` (the training's normalisation region).
    """
    nz, _, nx = shape
    z = np.arange(nz) - (nz - 1) / 2.0
    x = np.arange(nx) - (nx - 1) / 2.0
    r = min(nz, nx) / 2.0 - inset
    return ((z[:, None] ** 2 + x[None, :] ** 2) <= r * r)[:, None, :]


def resample(volume: np.ndarray, voxel_nm: float, target_nm: float) -> np.ndarray:
    """Resample a ``(Z, Y, X)`` volume from ``voxel_nm`` to ``target_nm`` as inference does
    (:func:`models.infer.resample`: averaged over each coarser voxel's footprint, trilinear
    where finer; voxel edges aligned); every axis keeps at least one voxel.

    Averaging matters here: the noise and spectrum metrics of a tomogram finer than the dataset
    would otherwise measure its own voxels' noise, aliased, not what it looks like at the
    dataset's voxel size.
    """
    from models.infer import resample as resample_to

    factor = float(voxel_nm) / float(target_nm)
    vol = np.asarray(volume, dtype=np.float32)
    if abs(factor - 1.0) < 1e-6:
        return vol
    return resample_to(vol, tuple(max(1, int(round(n * factor))) for n in vol.shape))


def prepare_volume(volume: np.ndarray, normalization: dict) -> np.ndarray:
    """The training's view of a tomogram: :func:`models.infer.normalize_volume` (rank mapping of the
    values inside the FOV cylinder onto N(0, 1) quantiles, 0 outside), float32 ``(Z, Y, X)``."""
    from models.infer import normalize_volume

    return normalize_volume(np.asarray(volume, dtype=np.float32), normalization)


def robust_scale(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(v − median) / IQR`` with the median and interquartile range of the values in ``mask``.

    Notes
    -----
    The rank normalisation of :func:`prepare_volume` maps any volume's values inside the FOV onto
    the same N(0, 1) quantiles, so histograms after it are identical by construction; the
    intensity-histogram metrics therefore use this affine, shape-preserving scaling instead.
    """
    vals = np.asarray(volume, dtype=np.float32)[np.broadcast_to(mask, volume.shape)]
    q25, q50, q75 = np.percentile(vals, [25, 50, 75])
    iqr = float(q75 - q25) or 1.0
    return ((np.asarray(volume, dtype=np.float32) - q50) / iqr).astype(np.float32)


def plane_indices(ny: int, max_planes: int) -> np.ndarray:
    """Up to ``max_planes`` evenly spaced Y indices of ``ny`` planes (integers, sorted)."""
    return np.unique(np.linspace(0, ny - 1, min(ny, max_planes)).round().astype(int))


# --- intensity histograms -------------------------------------------------------------------------


def intensity_histogram(scaled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised histogram (sums to 1) of ``scaled`` values in ``mask``: 64 bins on [−4, 4]
    (values outside are clipped into the end bins)."""
    vals = np.clip(scaled[np.broadcast_to(mask, scaled.shape)], *HIST_RANGE)
    h, _ = np.histogram(vals, bins=HIST_BINS, range=HIST_RANGE)
    return h / max(h.sum(), 1)


def histogram_overlap(h1: np.ndarray, h2: np.ndarray) -> float:
    """Overlap coefficient ``Σ min(h1, h2)`` of two normalised histograms [4]_: 1 identical, 0
    disjoint (**higher is closer**)."""
    return float(np.minimum(h1, h2).sum())


def subsample_values(
    scaled: np.ndarray, mask: np.ndarray, n: int = 20000, seed: int = 0
) -> np.ndarray:
    """Up to ``n`` values of ``scaled`` in ``mask``, drawn without replacement (fixed seed)."""
    vals = scaled[np.broadcast_to(mask, scaled.shape)]
    if vals.size > n:
        vals = np.random.default_rng(seed).choice(vals, n, replace=False)
    return vals.astype(np.float64)


def wasserstein(v1: np.ndarray, v2: np.ndarray) -> float:
    """1-D Wasserstein (earth mover's) distance between two value samples, in the units of the
    values (**lower is closer**; :func:`scipy.stats.wasserstein_distance`)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(v1, v2))


# --- power spectrum in the XZ planes --------------------------------------------------------------


def fov_window(nz: int, nx: int, inset: float, taper: float = 0.2) -> np.ndarray:
    """A ``(Z, X)`` Tukey window on the FOV disk: 1 inside ``(1 − taper)·R``, a cosine taper to 0
    at ``R = min(Z, X)/2 − inset`` (limits the leakage of the FOV edge into the spectrum)."""
    z = np.arange(nz) - (nz - 1) / 2.0
    x = np.arange(nx) - (nx - 1) / 2.0
    r = np.hypot(z[:, None], x[None, :])
    big = max(min(nz, nx) / 2.0 - inset, 2.0)
    t = np.clip((r - (1 - taper) * big) / (taper * big), 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float64)


def plane_power_spectrum(
    normalised: np.ndarray, inset: float, max_planes: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Mean 2D power spectrum of the windowed XZ planes, zero-padded to ``(2Z, 2X)``.

    Parameters
    ----------
    normalised : ndarray, shape (Z, Y, X)
        Normalised volume (:func:`prepare_volume`).
    inset : float
        FOV inset in voxels (the window's radius is ``min(Z, X)/2 − inset``).
    max_planes : int
        Y planes averaged (evenly spaced).

    Returns
    -------
    power : ndarray, shape (2Z, 2X)
        ``mean_y |FFT2(w · (v_y − mean_w v_y))|²`` in unshifted FFT order (axis 0: kz, 1: kx).
    window_acf : ndarray, shape (2Z, 2X)
        Autocorrelation of the window ``w`` (to unbias the autocorrelation, see
        :func:`autocorrelation_length`).
    """
    nz, ny, nx = normalised.shape
    w = fov_window(nz, nx, inset)
    shape = (2 * nz, 2 * nx)
    power = np.zeros(shape)
    planes = plane_indices(ny, max_planes)
    for j in planes:
        v = normalised[:, j, :].astype(np.float64)
        v = (v - (v * w).sum() / w.sum()) * w
        power += np.abs(np.fft.fft2(v, s=shape)) ** 2
    window_acf = np.fft.ifft2(np.abs(np.fft.fft2(w, s=shape)) ** 2).real
    return power / len(planes), window_acf


def frequency_grid(shape: tuple[int, int], voxel_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(|f|, φ)`` of an unshifted ``(kz, kx)`` FFT grid: |f| in cycles/nm and the angle φ from
    the kz (beam) axis in degrees, folded into [0°, 90°]."""
    fz = np.fft.fftfreq(shape[0], d=voxel_nm)[:, None]
    fx = np.fft.fftfreq(shape[1], d=voxel_nm)[None, :]
    f = np.hypot(fz, fx)
    phi = np.degrees(np.arctan2(np.abs(fx), np.abs(fz)))
    return f, phi


def disk_mean_power(power: np.ndarray, voxel_nm: float) -> float:
    """Mean power over the frequency disk ``0 < |f| ≤ f_N`` (the reference of relative powers)."""
    f, _ = frequency_grid(power.shape, voxel_nm)
    return float(power[(f > 0) & (f <= 0.5 / voxel_nm)].mean())


def band_powers(power: np.ndarray, voxel_nm: float, n_bands: int = N_BANDS) -> np.ndarray:
    """Relative power in ``n_bands`` equal-width radial frequency bands from 0 to Nyquist.

    ``P_b = mean_{f ∈ band b} P(f) / mean_{0 < f ≤ f_N} P(f)`` with ``f_N = 1 / (2·voxel_nm)``
    (DC excluded); 1 is the average over the disk. Shape ``(n_bands,)``.
    """
    f, _ = frequency_grid(power.shape, voxel_nm)
    f_nyq = 0.5 / voxel_nm
    inside = (f > 0) & (f <= f_nyq)
    total = disk_mean_power(power, voxel_nm)
    edges = np.linspace(0.0, f_nyq, n_bands + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = inside & (f > lo) & (f <= hi)
        out.append(power[sel].mean() / total if sel.any() else np.nan)
    return np.asarray(out)


def radial_profile(
    power: np.ndarray, voxel_nm: float, n_bins: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power in ``n_bins`` log-spaced bins from ``f_N / 32`` to Nyquist ``f_N``.

    Returns ``(f, P)``: bin centres (cycles/nm, geometric) and mean power; empty bins are NaN.
    """
    f, _ = frequency_grid(power.shape, voxel_nm)
    f_nyq = 0.5 / voxel_nm
    edges = np.geomspace(f_nyq / 32.0, f_nyq, n_bins + 1)
    idx = np.digitize(f.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    sums = np.bincount(idx[ok], power.ravel()[ok], minlength=n_bins)
    counts = np.bincount(idx[ok], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.sqrt(edges[:-1] * edges[1:]), prof


def spectral_slope(freqs: np.ndarray, profile: np.ndarray) -> float:
    """Least-squares slope of ``log P`` against ``log f`` (dimensionless; about −2 to −4 for
    smooth images, towards 0 for white noise)."""
    ok = np.isfinite(profile) & (profile > 0)
    if ok.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(freqs[ok]), np.log(profile[ok]), 1)[0])


# --- missing-wedge signature ----------------------------------------------------------------------


def angular_energy(
    power: np.ndarray, voxel_nm: float, bin_deg: float = ANGLE_BIN_DEG, band=(0.1, 0.9)
) -> tuple[np.ndarray, np.ndarray]:
    """Energy of the kx–kz plane per angle φ from the kz (beam) axis.

    Over the annulus ``band[0]·f_N < |f| ≤ band[1]·f_N`` (the lowest frequencies hold the window
    and the object's outline, the corners are beyond Nyquist), the power is summed in bins of
    ``bin_deg`` over φ ∈ [0°, 90°] (folded: the spectrum of a real image is symmetric).

    Returns
    -------
    fractions : ndarray, shape (90 / bin_deg,)
        Energy fraction per bin (sums to 1), from the mean power per frequency sample so that
        bins holding unequal numbers of grid samples (the diagonal) are weighted by their angle.
    density : ndarray, same shape
        Mean power per frequency sample in each bin (for :func:`wedge_half_angle`).
    """
    f, phi = frequency_grid(power.shape, voxel_nm)
    f_nyq = 0.5 / voxel_nm
    sel = (f > band[0] * f_nyq) & (f <= band[1] * f_nyq)
    n_bins = int(round(90.0 / bin_deg))
    idx = np.minimum((phi[sel] / bin_deg).astype(int), n_bins - 1)
    energy = np.bincount(idx, power[sel], minlength=n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    density = energy / np.maximum(counts, 1)
    return density / max(density.sum(), 1e-30), density


def wedge_fraction(fractions: np.ndarray, half_angle_deg: float) -> float:
    """Energy fraction within ``±half_angle_deg`` of kz (bins of :func:`angular_energy`, the bin
    straddling the limit counted pro rata). With a tilt range ±θmax this is the energy inside the
    nominal missing wedge ``90° − θmax``: near 0 for an ideal limited-angle reconstruction."""
    width = 90.0 / len(fractions)
    lo = np.arange(len(fractions)) * width
    part = np.clip((half_angle_deg - lo) / width, 0.0, 1.0)
    return float((fractions * part).sum())


def wedge_half_angle(density: np.ndarray, min_contrast: float = 4.0, level: float = 0.8) -> float:
    """Estimated missing-wedge half-angle in degrees (0 for a full rotation).

    The angular power density (:func:`angular_energy`) is low inside the wedge. With
    ``ref`` = its 75th percentile and ``floor`` = its smallest value within 10° of kz, the wedge
    is absent (0°) if ``ref / floor < min_contrast``; else the half-angle is where the log density
    first rises above ``log floor + level · (log ref − log floor)`` (linear interpolation between
    bin centres). ``level = 0.8`` recovers 20°, 30° and 40° wedges of limited-angle FBP
    reconstructions of white noise (64² planes) within 1°; on small or object-dominated planes it
    is an estimate to a few degrees.
    """
    width = 90.0 / len(density)
    logd = np.log(np.maximum(density, 1e-30))
    ref = np.percentile(logd, 75)
    floor = logd[: max(1, int(round(10.0 / width)))].min()
    if ref - floor < np.log(min_contrast):
        return 0.0
    threshold = floor + level * (ref - floor)
    above = np.nonzero(logd >= threshold)[0]
    k = int(above[0]) if above.size else len(logd) - 1
    if k == 0:
        return 0.0
    t = (threshold - logd[k - 1]) / max(logd[k] - logd[k - 1], 1e-12)
    return float((k - 0.5 + t) * width)


# --- noise, edges, autocorrelation ----------------------------------------------------------------


def _gauss_xz(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter of sd ``sigma`` voxels in the XZ planes only (none along Y)."""
    return ndimage.gaussian_filter(volume.astype(np.float32), (sigma, 0.0, sigma), mode="reflect")


def noise_level(normalised: np.ndarray, mask: np.ndarray, sigma: float = 1.0) -> float:
    """Robust noise sd on the normalised scale, from a high-pass residual [3]_.

    ``σ_n = MAD(r) / 0.6745 / c`` over the FOV, with ``r = v − G_σ * v`` (Gaussian ``G_σ`` in the
    XZ planes) and ``c = ||δ − G_σ||₂`` so that white noise of sd s gives σ_n = s. Reconstruction
    noise is not white (FBP boosts high frequencies), so this is an index, comparable between
    volumes at one voxel size. Higher is noisier.
    """
    r = normalised - _gauss_xz(normalised, sigma)
    vals = r[np.broadcast_to(mask, r.shape)]
    mad = np.median(np.abs(vals - np.median(vals)))
    size = 2 * int(np.ceil(4 * sigma)) + 1
    delta = np.zeros((size, 1, size), dtype=np.float32)
    delta[size // 2, 0, size // 2] = 1.0
    c = float(np.linalg.norm(delta - _gauss_xz(delta, sigma)))
    return float(mad / MAD_TO_SD / c)


def edge_sharpness(
    normalised: np.ndarray, mask: np.ndarray, voxel_nm: float, sigma: float = 1.0
) -> float:
    """Edge sharpness in 1/µm: ``P90(|∇(G_σ * v)|) / IQR(v)`` over the FOV.

    The gradient (central differences in the XZ planes, per µm) of the volume smoothed by a
    Gaussian of ``sigma`` voxels (so pixel noise weighs less) at its 90th percentile (the edges),
    divided by the interquartile range of the values (the contrast). Higher is sharper; a
    Gaussian blur of sd s roughly divides it by ``sqrt(1 + s²/s0²)``.
    """
    s = _gauss_xz(normalised, sigma)
    gz = np.gradient(s, axis=0) if s.shape[0] > 1 else np.zeros_like(s)
    gx = np.gradient(s, axis=2) if s.shape[2] > 1 else np.zeros_like(s)
    m = np.broadcast_to(mask, s.shape)
    g = np.hypot(gz, gx)[m]
    q25, q75 = np.percentile(normalised[m], [25, 75])
    return float(np.percentile(g, 90) / max(q75 - q25, 1e-12) / (voxel_nm * 1e-3))


def autocorrelation_length(power: np.ndarray, window_acf: np.ndarray, voxel_nm: float) -> float:
    """Lag (nm) at which the radially averaged autocorrelation of the XZ planes falls to 1/e.

    The autocorrelation is the inverse FFT of the zero-padded power spectrum [1]_ divided by the
    window's own autocorrelation (unbiased for a stationary texture), normalised to 1 at lag 0,
    averaged over rings of integer lag ``r = |(Δz, Δx)|`` up to half the window; the crossing is
    interpolated linearly. White noise gives about one voxel; larger is smoother/coarser.
    """
    acf = np.fft.ifft2(power).real
    wacf = window_acf / window_acf.flat[0]
    ok = wacf > 0.05
    rho = np.where(ok, acf / np.where(ok, wacf, 1.0), 0.0) / acf.flat[0]
    lz = np.fft.fftfreq(power.shape[0], 1.0 / power.shape[0])[:, None]
    lx = np.fft.fftfreq(power.shape[1], 1.0 / power.shape[1])[None, :]
    r = np.rint(np.hypot(lz, lx)).astype(int)
    n_r = max(2, min(power.shape) // 4)
    sel = ok & (r < n_r)
    prof = np.bincount(r[sel], rho[sel], minlength=n_r) / np.maximum(
        np.bincount(r[sel], minlength=n_r), 1
    )
    below = np.nonzero(prof < np.exp(-1.0))[0]
    if below.size == 0:
        return float(n_r * voxel_nm)
    k = int(below[0])
    t = (prof[k - 1] - np.exp(-1.0)) / max(prof[k - 1] - prof[k], 1e-12)
    return float((k - 1 + t) * voxel_nm)


# --- capillary ring -------------------------------------------------------------------------------


def capillary_ring(
    scaled: np.ndarray,
    voxel_nm: float,
    *,
    n_sectors: int = 24,
    min_contrast: float = 1.5,
    min_coverage: float = 0.85,
    min_radius: float = 0.5,
) -> dict:
    """Detect a bright ring around the tilt axis (a capillary mount's wall) in the XZ planes.

    On the Y-mean of the robust-scaled volume (:func:`robust_scale`), the ring radius ``r*`` is the
    brightest ring (mean over integer radii) between ``min_radius · R`` and ``R = min(Z, X)/2 − 1``.
    It counts as a capillary if (a) its contrast ``(m(r*) − median) / IQR`` over the plane is at
    least ``min_contrast``, (b) it is a local maximum (brighter by half its contrast than the ring
    a few voxels further out, or further in when at the edge), and (c) it is bright (above
    median + contrast/2) in at least ``min_coverage`` of ``n_sectors`` angular sectors.

    Returns ``{"detected", "radius_nm", "contrast", "coverage"}``.
    """
    img = np.asarray(scaled, dtype=np.float64).mean(axis=1)
    nz, nx = img.shape
    big = int(min(nz, nx) / 2 - 1)
    zc, xc = np.arange(nz) - (nz - 1) / 2.0, np.arange(nx) - (nx - 1) / 2.0
    r = np.hypot(zc[:, None], xc[None, :])
    ri = np.rint(r).astype(int)
    inside = ri <= big
    if big < 8:
        return {"detected": False, "radius_nm": None, "contrast": 0.0, "coverage": 0.0}
    prof = np.bincount(ri[inside], img[inside], minlength=big + 1) / np.maximum(
        np.bincount(ri[inside], minlength=big + 1), 1
    )
    vals = img[inside]
    med = float(np.median(vals))
    iqr = float(np.subtract(*np.percentile(vals, [75, 25]))) or 1.0
    lo = int(min_radius * big)
    k = lo + int(np.argmax(prof[lo:]))
    height = prof[k] - med
    d = max(2, big // 12)
    neighbours = [prof[j] for j in (k - d, k + d) if 0 <= j <= big]
    local = height > 0 and all(prof[k] - v > 0.5 * height for v in neighbours)
    theta = np.arctan2(zc[:, None], xc[None, :]) + np.zeros_like(r)
    ring = np.abs(r - k) <= 1.0
    sector = ((theta[ring] + np.pi) / (2 * np.pi) * n_sectors).astype(int) % n_sectors
    sums = np.bincount(sector, img[ring], minlength=n_sectors)
    means = sums / np.maximum(np.bincount(sector, minlength=n_sectors), 1)
    coverage = float(np.mean(means > med + 0.5 * height))
    contrast = float(height / iqr)
    detected = bool(local and contrast >= min_contrast and coverage >= min_coverage)
    return {
        "detected": detected,
        "radius_nm": float(k * voxel_nm),
        "contrast": contrast,
        "coverage": coverage,
    }


# --- one volume's profile, and two profiles' differences ------------------------------------------


def measure_volume(
    volume: np.ndarray,
    voxel_nm: float,
    normalization: dict,
    *,
    nominal_wedge_deg: float,
    max_planes: int = 32,
) -> dict:
    """Every measurement of one ``(Z, Y, X)`` volume already at the common voxel size ``voxel_nm``.

    ``normalization`` is the training's (``fov_inset_px``, see :func:`prepare_volume`);
    ``nominal_wedge_deg`` is the missing-wedge half-angle ``90° − θmax`` of the dataset's tilt
    range, for :func:`wedge_fraction`. Returns a JSON-safe dict of scalars and short lists.
    """
    inset = float(normalization.get("fov_inset_px", 5))
    vol = np.asarray(volume, dtype=np.float32)
    z = prepare_volume(vol, normalization)
    mask = fov_mask(vol.shape, inset)
    inner = fov_mask(vol.shape, inset + 3)
    scaled = robust_scale(vol, mask)
    power, wacf = plane_power_spectrum(z, inset, max_planes)
    freqs, prof = radial_profile(power, voxel_nm)
    fractions, density = angular_energy(power, voxel_nm)
    return {
        "shape": list(vol.shape),
        "histogram": intensity_histogram(scaled, mask).tolist(),
        "band_power": band_powers(power, voxel_nm).tolist(),
        "spectrum_f_per_nm": freqs.tolist(),
        "spectrum": (prof / disk_mean_power(power, voxel_nm)).tolist(),
        "spectral_slope": spectral_slope(freqs, prof),
        "noise_sd": noise_level(z, inner),
        "angular_energy": fractions.tolist(),
        "wedge_fraction": wedge_fraction(fractions, nominal_wedge_deg),
        "wedge_half_angle_deg": wedge_half_angle(density),
        "edge_sharpness_per_um": edge_sharpness(z, inner, voxel_nm),
        "autocorrelation_nm": autocorrelation_length(power, wacf, voxel_nm),
        "capillary": capillary_ring(robust_scale(vol, fov_mask(vol.shape, 0.0)), voxel_nm),
        "_values": subsample_values(scaled, mask),
    }


def _log_ratio(a: float, b: float) -> float:
    return float(np.log(max(a, 1e-12) / max(b, 1e-12)))


def compare(syn: dict, real: dict) -> dict:
    """Differences of a synthetic profile from the real one (:func:`measure_volume`) and ``distance``.

    Terms (all dimensionless, 0 when equal): ``1 − overlap``; ``W1`` (IQR units); the RMS over the
    bands of ``ln(P_syn / P_real)``; ``|Δ slope|``; ``|ln(σ_syn / σ_real)|``; the total-variation
    distance ``½ Σ |a_syn − a_real|`` of the angular energy distributions; ``|ln|`` of the edge
    sharpness and autocorrelation-length ratios. ``distance = sqrt(mean(term²))``, lower is closer.
    """
    bands = np.log(np.asarray(syn["band_power"]) / np.asarray(real["band_power"]))
    out = {
        "histogram_overlap": histogram_overlap(
            np.asarray(syn["histogram"]), np.asarray(real["histogram"])
        ),
        "wasserstein": wasserstein(syn["_values"], real["_values"]),
        "band_log_ratio": bands.tolist(),
        "spectral_slope_diff": syn["spectral_slope"] - real["spectral_slope"],
        "noise_log_ratio": _log_ratio(syn["noise_sd"], real["noise_sd"]),
        "angular_tv": 0.5
        * float(np.abs(np.subtract(syn["angular_energy"], real["angular_energy"])).sum()),
        "wedge_fraction_diff": syn["wedge_fraction"] - real["wedge_fraction"],
        "wedge_half_angle_diff_deg": syn["wedge_half_angle_deg"] - real["wedge_half_angle_deg"],
        "edge_log_ratio": _log_ratio(syn["edge_sharpness_per_um"], real["edge_sharpness_per_um"]),
        "autocorrelation_log_ratio": _log_ratio(
            syn["autocorrelation_nm"], real["autocorrelation_nm"]
        ),
    }
    terms = {
        "histogram": 1.0 - out["histogram_overlap"],
        "wasserstein": out["wasserstein"],
        "spectrum": float(np.sqrt(np.nanmean(bands**2))),
        "slope": abs(out["spectral_slope_diff"]),
        "noise": abs(out["noise_log_ratio"]),
        "angular": out["angular_tv"],
        "edge": abs(out["edge_log_ratio"]),
        "autocorrelation": abs(out["autocorrelation_log_ratio"]),
    }
    out["terms"] = terms
    out["distance"] = float(np.sqrt(np.mean(np.square(list(terms.values())))))
    return out
