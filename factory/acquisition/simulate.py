"""The acquisition stage: phantom → tilt series of a simulated cryo soft X-ray microscope.

The stage is a chain of effects in a fixed order, the table :data:`CHAIN`.
:func:`simulate_acquisition` puts the phantom into an :class:`AcquisitionState` and walks the
table. Each row is one effect, applied by one function ``apply(section, stream, state)`` that reads
and updates the state and records what it drew in ``state.meta[row]``. A row runs only while its
config section's ``enabled`` is true; a section without that switch always runs. The rows, in
order, are the physics of the model:

==  ================  ==  ============================  ======  ====================================
#   row               id  config section                space   effect
==  ================  ==  ============================  ======  ====================================
1   tilt              0   acquisition.tilt              angles  nominal, true angles; dose order
2   blur              1   acquisition.blur              volume  3D Gaussian blur
3   fiducials         2   acquisition.fiducials         volume  gold beads, background only
4   cracks            3   acquisition.cracks            volume  ice cracks, background only
5   background_noise  4   acquisition.background_noise  volume  3D texture, background only
6   clip_to_fov       –   acquisition                   volume  zero outside the FOV cylinder
7   motion            7   acquisition.motion            (draw)  rotation, drift within an exposure
8   psf               6   acquisition.psf               (draw)  depth-dependent PSF, σ per slab
9   projection        –   acquisition                   → proj  line integrals at the true angles
10  damage            5   acquisition.damage            (draw)  shrinkage, mass loss with the dose
11  alignment         12  acquisition.alignment         (draw)  shifts, axis offset and rotation
12  warp              –   acquisition                   proj    one affine warp per projection
13  flicker           9   acquisition.flicker           proj    beam flicker
14  ice               8   acquisition.ice               proj    ice layer, path ``h / cos θ``
15  mount             13  mount                         proj    grid mount: support film and bars
16  rings             11  acquisition.rings             det     gain of defective pixels
17  noise             10  acquisition.noise             det     counts, photon and read noise
18  sinogram          –   acquisition                   det     noiseless readout; the record
==  ================  ==  ============================  ======  ====================================

``id`` is the row's random stream (see *Randomness*), – for a deterministic step; a ``(draw)`` row
only draws its parameters, which a later step applies (the projection, or the warp).

Arrays and units
----------------
volume : torch.Tensor, float32, (Z, Y, X)
    Linear attenuation coefficient (LAC) µ in 1/µm; Y is the tilt axis. ``state.volume``, rows 2–9.
projections : torch.Tensor, float32, (angle, Y, X)
    One image per projection, sorted by nominal angle (``tilt.series_pos`` gives the acquisition
    order); row Y along the tilt axis, column X across the detector, pixel pitch one voxel.
    Optical depth ``∫µ dl`` (dimensionless: the line integral times the voxel size in µm).
    ``state.projections``, rows 9–17.
sinogram : torch.Tensor, float32, (angle, Y, X)
    ``−log(I / I_flat)`` (optical depth) or ``I / I_flat`` (normalised intensity), as
    ``acquisition.sinogram`` says.
angles : numpy.ndarray, float64, (angle,)
    Degrees. Nominal (what the reconstruction uses) and true (what the projections are taken at).

Notes
-----
Rows 2–6 (volume): on the LAC volume (the reference's order). Beads, cracks and the texture go into
the background only (label 0; the medium inside a capillary). The volume after row 6 is the
optional ``noisy_volume``.

Row 9 (projection, :mod:`factory.tomo`): at the **true** angles. With a depth PSF or a rotation
during the exposure, the volume is projected as depth slabs, each blurred by its own kernel
(:mod:`.optics`); then the drift blur. A capillary wider than the grid gets its exterior added
analytically (:mod:`.mount`). The line integrals are multiplied by the voxel size in µm.

Rows 10–12 (sample motion between projections): dose-dependent shrinkage and mass loss (damage,
linear in the acquisition order), shifts, tilt-axis offset and in-plane rotation, applied as one
affine warp per projection, then the mass loss.

Rows 13–15: beam flicker (``reference``: added ∝ the projection's mean; ``flat-field``: the
incident beam varies, applied by the detector), the ice layer ``h · µ_ice · voxel_um / cos θ`` and
a grid mount's support film and bars.

Rows 16–18 (detector): Beer–Lambert counts ``I0 · flicker · gain · exp(−p)``, Poisson photon
noise, Gaussian read noise; detector defects have a gain that the flat field does not correct
(→ rings). Flat-field normalisation by the (noisy, averaged) open-beam flat, then ``−log`` back to
optical depth (or kept as normalised intensities). Without noise the same model is applied
noiselessly.

Randomness
----------
Every row with an id has its own stream: the acquisition stage's seed sequence
(:func:`factory.rng.seed_sequence`) with the id appended to the spawn key
(:func:`factory.rng.child_sequence`, the rule the phantom's parts follow too), so switching one effect
on or off never changes another's draws. The ids are part of a dataset's identity (like
:data:`factory.rng.STAGE_ID`): never renumber or reuse one.

Adding an effect
----------------
Write one function ``_name(section, stream, state)``; add its config section (with ``enabled``) to
:class:`~factory.acquisition.config.AcquisitionConfig`; add one row to :data:`CHAIN` at its place in
the physics, with a new id; add one test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, reduce
from typing import Any

import numpy as np
import torch

import schemas
from factory.acquisition.config import (
    AcquisitionConfig,
    AlignmentConfig,
    BackgroundNoiseConfig,
    CracksConfig,
    DamageConfig,
    FiducialConfig,
    FlickerConfig,
    IceConfig,
    MotionConfig,
    NoiseConfig,
    PSFConfig,
    RingsConfig,
    TiltConfig,
    VolumeBlurConfig,
)
from factory.acquisition.mount import (
    bars_optical_depth,
    capillary_exterior,
    draw_grid_mount,
    film_optical_depth,
)
from factory.acquisition.optics import (
    blur_and_sum,
    depth_slab_projections,
    slab_centres,
    warp_projections,
)
from factory.acquisition.tilt import TiltScheme, draw_tilt_scheme
from factory.acquisition.volume import (
    CHUNK_SLICES,
    crack_sheets,
    cylinder_mask,
    gaussian_blur3d,
    place_fiducials,
    unit_vectors,
)
from factory.params import Dist
from factory.phantom.mount import CapillaryPlan
from factory.rng import child_rng, child_torch_generator, seed_sequence

SINOGRAM_UNITS = {
    "line-integrals": "optical depth -log(I / I_flat) = integral of mu dl (mu in 1/um, l in um)",
    "intensities": "normalised intensity I / I_flat (dimensionless)",
}


@dataclass
class Acquisition:
    """One simulated tilt series.

    Attributes
    ----------
    sinogram : torch.Tensor
        ``(angle, Y, X)`` float32, sorted by nominal angle; optical depth or normalised
        intensities, as ``meta["sinogram"]["kind"]`` says.
    angles_deg : numpy.ndarray
        ``(angle,)`` float64 nominal angles (what the reconstruction uses).
    noisy_volume : torch.Tensor or None
        ``(Z, Y, X)`` float32 LAC (1/µm) after the volume-level effects, or None.
    meta : dict
        JSON-safe record of every drawn value.
    true_angles_deg : numpy.ndarray
        ``(angle,)`` the angles the projections were taken at.
    voxel_um : float
        Voxel edge in µm.
    shape : tuple of int
        The volume shape (Z, Y, X).
    sinogram_kind : str
        ``"line-integrals"`` or ``"intensities"``.
    """

    sinogram: torch.Tensor
    angles_deg: np.ndarray
    noisy_volume: torch.Tensor | None
    meta: dict
    true_angles_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    voxel_um: float = 1.0
    shape: tuple[int, int, int] = (0, 0, 0)
    sinogram_kind: str = "line-integrals"


# -- the state the effects share ------------------------------------------------------------------


@dataclass(eq=False)
class AcquisitionState:
    """What the effects of one sample share while :data:`CHAIN` runs.

    Attributes
    ----------
    device : torch.device
        Device of every tensor.
    shape : tuple of int
        The volume shape (Z, Y, X); the detector is (Y, X).
    voxel_nm, vox_um : float
        Voxel edge in nm and in µm (detector pixel pitch = one voxel).
    energy_ev : float
        Photon energy in eV (material LACs).
    sinogram_kind : str
        What the sinogram holds: ``"line-integrals"`` or ``"intensities"``.
    lac : torch.Tensor
        The phantom's LAC (Z, Y, X) in 1/µm; never modified (see :meth:`own_volume`).
    labels : torch.Tensor or None
        The phantom's labels (Z, Y, X), until the projection.
    capillary : CapillaryPlan or None
        The phantom's capillary, if it is mounted in one.
    meta : dict
        The record: one entry per effect that ran, in the order of the chain.
    tilt : TiltScheme
        The drawn tilt scheme (row 1); ``n`` projections.
    volume : torch.Tensor or None
        The LAC volume (Z, Y, X) in 1/µm through the volume rows; None after the projection.
    noisy_volume : torch.Tensor or None
        The volume as projected, if ``keep_noisy_volume``.
    sweep_deg, drift_yt : numpy.ndarray or None
        Motion within each exposure (row 7): rotation ``(n,)`` in degrees, drift ``(n, 2)``
        (Y, X) in pixels (None without any drift).
    slab_sigma_px : numpy.ndarray or None
        The depth PSF's Gaussian sd per depth slab ``(n_slabs,)`` in pixels (row 8).
    projections : torch.Tensor or None
        ``(angle, Y, X)`` optical depth from the projection (row 9) on.
    scale, mass : numpy.ndarray or None
        Damage (row 10): ``(n,)`` linear scale and LAC factor of each projection.
    shifts : numpy.ndarray or None
        Alignment (row 11): ``(n, 2)`` total shift (Y, X) in pixels.
    axis_angle : float
        Alignment (row 11): in-plane rotation of the tilt axis, degrees.
    flat_factor : torch.Tensor or None
        Flat-field flicker (row 13): ``(angle, Y, X)`` factor of the incident beam.
    gain : torch.Tensor or None
        Detector gain ``(Y, X)`` (row 16), not corrected by the flat field.
    sinogram : torch.Tensor or None
        The stored sinogram (rows 17–18).
    """

    device: torch.device
    shape: tuple[int, int, int]
    voxel_nm: float
    vox_um: float
    energy_ev: float
    sinogram_kind: str
    lac: torch.Tensor
    labels: torch.Tensor | None
    capillary: CapillaryPlan | None
    meta: dict
    tilt: TiltScheme | None = None
    volume: torch.Tensor | None = None
    noisy_volume: torch.Tensor | None = None
    sweep_deg: np.ndarray | None = None
    drift_yt: np.ndarray | None = None
    slab_sigma_px: np.ndarray | None = None
    projections: torch.Tensor | None = None
    scale: np.ndarray | None = None
    mass: np.ndarray | None = None
    shifts: np.ndarray | None = None
    axis_angle: float = 0.0
    flat_factor: torch.Tensor | None = None
    gain: torch.Tensor | None = None
    sinogram: torch.Tensor | None = None
    _background: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_phantom(cls, config, phantom, device: torch.device) -> AcquisitionState:
        """The state before the first row: the phantom's LAC as the volume."""
        lac = torch.as_tensor(phantom.lac).to(device, torch.float32)
        labels = torch.as_tensor(phantom.labels).to(device)
        shape = tuple(int(s) for s in lac.shape)
        if lac.ndim != 3 or tuple(labels.shape) != shape:
            raise ValueError(
                f"phantom: lac and labels must be (Z, Y, X) of one shape; got {tuple(lac.shape)} "
                f"and {tuple(labels.shape)}"
            )
        return cls(
            device=device,
            shape=shape,
            voxel_nm=config.grid.voxel_nm,
            vox_um=float(config.grid.voxel_nm) * 1e-3,
            energy_ev=config.energy_ev,
            sinogram_kind=config.acquisition.sinogram,
            lac=lac,
            labels=labels,
            capillary=_capillary(phantom, config.grid.voxel_nm),
            meta={"substream_rule": SUBSTREAM_RULE},
            volume=lac,
        )

    @property
    def n(self) -> int:
        """Number of projections."""
        return self.tilt.n

    @property
    def series_frac(self) -> np.ndarray:
        """``(n,)`` position in the acquisition order: 0 for the first projection, 1 for the last."""
        return self.tilt.series_pos / max(self.n - 1, 1)

    def background(self) -> torch.Tensor:
        """Bool (Z, Y, X) mask of where the background effects go: label 0, or a capillary's
        medium. Made on first use and shared, so beads placed in it are left out by the others."""
        if self._background is None:
            bg = schemas.MEDIUM if self.capillary is not None else schemas.BACKGROUND
            self._background = self.labels == bg
        return self._background

    def release_labels(self) -> None:
        """Drop the labels and the background mask (no effect needs them after the volume)."""
        self.labels = self._background = None

    def own_volume(self) -> torch.Tensor:
        """The volume, first copied while it is still the phantom's ``lac`` (an output field), so
        that effects can add in place (``vol.add_(x)``: the same float32 sums as ``vol + x``
        without a second volume)."""
        if self.volume is self.lac:
            self.volume = self.volume.clone()
        return self.volume

    def result(self) -> Acquisition:
        return Acquisition(
            sinogram=self.sinogram.to(torch.float32).contiguous(),
            angles_deg=self.tilt.nominal_deg.copy(),
            noisy_volume=self.noisy_volume,
            meta=self.meta,
            true_angles_deg=self.tilt.true_deg.copy(),
            voxel_um=self.vox_um,
            shape=self.shape,
            sinogram_kind=self.sinogram_kind,
        )


# -- random streams -------------------------------------------------------------------------------


class _Streams:
    """Per-effect numpy and torch random streams of one sample's acquisition."""

    def __init__(self, seed: int, index: int, device: torch.device):
        self._ss = seed_sequence(seed, index, "acquisition")
        self._device = device

    def np(self, stream_id: int) -> np.random.Generator:
        return child_rng(self._ss, stream_id)

    def torch(self, stream_id: int) -> torch.Generator:
        # the second word of the same child sequence, so it differs from the numpy stream's seed
        return child_torch_generator(self._ss, stream_id, device=self._device)

    def of(self, effect: Effect) -> EffectStream | None:
        """The streams of one row, or None for a deterministic step."""
        return None if effect.stream_id is None else EffectStream(self, effect.stream_id)


class EffectStream:
    """The random streams of one effect: ``rng`` (numpy) and ``gen`` (torch), each made on first
    use and then kept, so an effect draws from one sequence of each."""

    def __init__(self, streams: _Streams, stream_id: int):
        self._streams, self._id = streams, stream_id

    @cached_property
    def rng(self) -> np.random.Generator:
        return self._streams.np(self._id)

    @cached_property
    def gen(self) -> torch.Generator:
        return self._streams.torch(self._id)


# -- helpers --------------------------------------------------------------------------------------


def sample_tensor(
    dist: Dist, shape: tuple[int, ...], gen: torch.Generator, rng: np.random.Generator, device
) -> torch.Tensor:
    """Draw a float32 tensor of ``shape`` from ``dist`` (torch for const/normal/uniform, fast)."""
    f32 = dict(dtype=torch.float32, device=device)
    if dist.const is not None:
        out = torch.full(shape, dist.const, **f32)
    elif dist.normal is not None:
        out = torch.randn(shape, generator=gen, **f32) * dist.normal[1] + dist.normal[0]
    elif dist.uniform is not None:
        lo, hi = dist.uniform
        out = torch.rand(shape, generator=gen, **f32) * (hi - lo) + lo
    else:
        out = torch.as_tensor(dist.sample(rng, size=shape), **f32)
    if dist.clamp is not None:
        out = out.clamp_(dist.clamp[0], dist.clamp[1])
    return out


def _texture3d(shape, scale_vox: float, octaves: int, gen: torch.Generator, device) -> torch.Tensor:
    """Smooth 3D noise rescaled to [0, 1] (Z, Y, X) from :mod:`factory.noise`."""
    from factory import noise

    t = noise.fractal_noise(shape, scale=scale_vox, octaves=octaves, generator=gen, device=device)
    return _unit_range(t)


def _texture2d_stack(n: int, shape2d, scale_px: float, gen: torch.Generator, device):
    """``n`` independent smooth 2D noise maps, each rescaled to [0, 1]: ``(n, *shape2d)``."""
    from factory import noise

    maps = torch.stack(
        [
            noise.fractal_noise(
                tuple(shape2d), scale=scale_px, octaves=1, generator=gen, device=device
            )
            for _ in range(n)
        ]
    )
    lo = maps.amin(dim=(1, 2), keepdim=True)
    hi = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def _unit_range(t: torch.Tensor) -> torch.Tensor:
    """Rescale ``t`` to [0, 1] **in place** (its min to 0, its max to 1) and return it.

    In place because ``t`` is a fresh 512³ temporary at every call site: ``(t - lo) / d`` would
    hold two more copies for the same float32 operations.
    """
    lo, hi = t.min(), t.max()
    return t.sub_(lo).div_((hi - lo).clamp_min(1e-12))


def _mul_mask_(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``t *= mask`` (a bool (Z, Y, X) volume) in chunks of Z slices; returns ``t``.

    A float × bool product first casts the whole mask to float32 (a 512³ temporary); chunks cast
    one slab at a time, with the same products.
    """
    for z0 in range(0, t.shape[0], CHUNK_SLICES):
        t[z0 : z0 + CHUNK_SLICES].mul_(mask[z0 : z0 + CHUNK_SLICES])
    return t


def _material_lac(name: str, energy_ev: float) -> float:
    """LAC (1/µm) of a named material at ``energy_ev`` from :mod:`factory.materials` (xraylib)."""
    from factory import materials

    return float(materials.lac(name, energy_ev))


def _lst(x) -> list:
    return np.asarray(x, dtype=np.float64).round(6).tolist()


def _capillary(phantom, voxel_nm: float) -> CapillaryPlan | None:
    """The phantom's capillary (rebuilt from its recorded draws), or None for other mounts."""
    mount = (getattr(phantom, "meta", None) or {}).get("mount")
    if not mount or mount.get("kind") != "capillary":
        return None
    return CapillaryPlan.from_meta(mount, float(voxel_nm))


def _f32(x, device=None) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32, device=device)


# -- 1. tilt scheme -------------------------------------------------------------------------------


def _tilt(c: TiltConfig, stream: EffectStream, s: AcquisitionState) -> None:
    s.tilt = draw_tilt_scheme(c, stream.rng)
    s.meta["tilt"] = s.tilt.to_meta()


# -- 2-6. volume: LAC (Z, Y, X) in 1/µm -----------------------------------------------------------


def _blur(c: VolumeBlurConfig, stream: EffectStream, s: AcquisitionState) -> None:
    sigma = float(c.sigma_vox.sample(stream.rng))
    s.volume = gaussian_blur3d(s.volume, sigma, c.kernel_size)
    s.meta["blur"] = {"sigma_vox": sigma, "kernel_size": c.kernel_size}


def _fiducials(c: FiducialConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng = stream.rng
    count = max(0, c.count.sample_int(rng))
    radii = c.radius_vox.sample(rng, size=count)
    bead_lac = (
        float(c.lac_per_um.sample(rng))
        if c.lac_per_um is not None
        else _material_lac("gold", s.energy_ev)
    )
    vol = s.own_volume()
    # the beads mark the shared background mask in place: later effects leave them out
    beads = place_fiducials(vol, s.background(), radii, bead_lac, rng)
    s.meta["fiducials"] = {"count": count, "lac_per_um": bead_lac, "beads": beads}


def _cracks(c: CracksConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng, shape = stream.rng, s.shape
    nz, ny, nx = shape
    strength = float(c.strength.sample(rng))
    count = max(0, c.count.sample_int(rng))
    centres = rng.uniform([0, 0, 0], [nz - 1, ny - 1, nx - 1], size=(count, 3))
    normals = unit_vectors(rng, count)
    extents = rng.uniform(0.25, 0.6, size=count) * min(shape)
    widths = c.width_vox.sample(rng, size=count)
    if count:
        gen, dev = stream.gen, s.device
        warp = _texture3d(shape, c.modulation_scale_vox, 1, gen, dev)
        warp.sub_(0.5).mul_(0.1 * min(shape))
        cmap = crack_sheets(shape, centres, normals, extents, widths, warp, device=dev)
        del warp
        cmap = _unit_range(cmap) if float(cmap.max()) > 0 else cmap
        modulation = _texture3d(shape, c.modulation_scale_vox, 1, gen, dev)
        # strength · cmap · modulation · background, left to right, in cmap's memory
        _mul_mask_(cmap.mul_(strength).mul_(modulation), s.background())
        del modulation
        s.own_volume().add_(cmap)
    s.meta["cracks"] = {
        "strength_per_um": strength,
        "count": count,
        "centres_zyx": _lst(centres),
        "normals_zyx": _lst(normals),
        "extents_vox": _lst(extents),
        "widths_vox": _lst(widths),
    }


def _background_noise(c: BackgroundNoiseConfig, stream: EffectStream, s: AcquisitionState) -> None:
    amp = float(c.amplitude.sample(stream.rng))
    tex = _texture3d(s.shape, c.scale_vox, c.octaves, stream.gen, s.device)
    # (tex · fov) · amp · background, in tex's memory
    _mul_mask_(tex.mul_(cylinder_mask(s.shape, 2.0, s.device)).mul_(amp), s.background())
    s.own_volume().add_(tex)
    s.meta["background_noise"] = {
        "amplitude_per_um": amp,
        "scale_vox": c.scale_vox,
        "octaves": c.octaves,
    }


def _clip_to_fov(acq: AcquisitionConfig, _stream: None, s: AcquisitionState) -> None:
    if acq.clip_to_fov:
        s.own_volume().mul_(cylinder_mask(s.shape, 2.0, s.device))


# -- 7-9. projection: motion and PSF draws, then the volume → optical depth (angle, Y, X) ---------


def _motion(c: MotionConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng, n = stream.rng, s.n
    s.sweep_deg = c.sweep_deg.sample(rng, size=n)
    drift_len = c.drift_px.sample(rng, size=n)
    drift_dir = rng.uniform(0.0, 2.0 * math.pi, size=n)
    if np.any(drift_len > 0):
        s.drift_yt = np.stack([drift_len * np.sin(drift_dir), drift_len * np.cos(drift_dir)], 1)
    s.meta["motion"] = {
        "sweep_deg": _lst(s.sweep_deg),
        "drift_px": _lst(drift_len),
        "drift_direction_rad": _lst(drift_dir),
    }


def _psf(c: PSFConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng = stream.rng
    centres = slab_centres((s.shape[0], s.shape[2]), c.n_slabs)
    sig_f = float(c.sigma_focus_nm.sample(rng))
    dof = float(c.depth_of_field_um.sample(rng))
    focal = float(c.focal_offset_um.sample(rng))
    delta_um = centres * s.vox_um - focal
    s.slab_sigma_px = sig_f / s.voxel_nm * np.sqrt(1.0 + (2.0 * delta_um / dof) ** 2)
    s.meta["psf"] = {
        "model": "sigma(d) = sigma_focus * sqrt(1 + (2 d / dof)^2), d = depth - focal_offset",
        "sigma_focus_nm": sig_f,
        "depth_of_field_um": dof,
        "focal_offset_um": focal,
        "n_slabs": c.n_slabs,
        "slab_depth_um": _lst(centres * s.vox_um),
        "slab_sigma_px": _lst(s.slab_sigma_px),
    }


def _project(acq: AcquisitionConfig, _stream: None, s: AcquisitionState) -> None:
    """Keep the noisy volume, project it at the true angles (depth PSF, motion blur), add a wide
    capillary's exterior, and scale the line integrals to optical depth."""
    from factory.tomo import ParallelProjector

    keep = acq.keep_noisy_volume
    s.noisy_volume = (
        s.volume.clone() if (keep and s.volume is s.lac) else (s.volume if keep else None)
    )
    s.release_labels()
    nz, _, nx = s.shape
    # A private projector, not the functional API's cache: the true angles are this sample's own,
    # and its matrix (~0.5 GB at 512² and 80 angles) is released as soon as the projections are
    # done instead of lingering through the reconstruction.
    projector = ParallelProjector((nz, nx), s.tilt.true_deg, det_count=nx, device=s.device)
    sweep_deg = s.sweep_deg if s.sweep_deg is not None else np.zeros(s.n)
    drift = _f32(s.drift_yt) if s.drift_yt is not None else None
    if s.slab_sigma_px is not None or bool(np.any(sweep_deg > 0)):
        proj = _slab_projection(acq.psf.n_slabs, sweep_deg, drift, projector, s)
    else:
        proj = projector.forward(s.volume)
        if drift is not None:
            proj = blur_and_sum(proj[None], torch.zeros((1, s.n)), None, drift)
    if s.capillary is not None:
        clip = cylinder_mask(s.shape, 2.0, s.device) if acq.clip_to_fov else None
        proj = proj + capillary_exterior(s.capillary, s.shape, projector, s.tilt.true_deg, clip)
        s.meta["mount"] = {
            "kind": "capillary",
            "exterior": "exact line integrals of the whole capillary minus the projection of its "
            "voxelised cross-section (the part outside the grid); not blurred by the depth PSF",
        }
    projector.release()
    del projector
    s.volume = None  # it lives on only as noisy_volume, if kept
    s.projections = proj * s.vox_um  # optical depth


def _slab_projection(k: int, sweep_deg, drift, projector, s: AcquisitionState) -> torch.Tensor:
    """The projection as ``k`` depth slabs, each blurred by its PSF and rotation sweep, summed."""
    centres = slab_centres((s.shape[0], s.shape[2]), k)
    sigma_px = np.zeros((k, s.n))
    if s.slab_sigma_px is not None:
        sigma_px[:] = s.slab_sigma_px[:, None]
    sweep_px = np.abs(centres)[:, None] * np.deg2rad(sweep_deg)[None, :]
    slabs = depth_slab_projections(s.volume, projector, k)
    return blur_and_sum(
        slabs, _f32(sigma_px), _f32(sweep_px) if np.any(sweep_px > 0) else None, drift
    )


# -- 10-15. projection space: optical depth (angle, Y, X) -----------------------------------------


def _damage(c: DamageConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng = stream.rng
    shrink = float(c.shrinkage.sample(rng))
    loss = float(c.mass_loss.sample(rng))
    s.scale = 1.0 - shrink * s.series_frac
    s.mass = 1.0 - loss * s.series_frac
    s.meta["damage"] = {
        "model": "linear in the accumulated dose (acquisition order); shrink about the centre",
        "shrinkage": shrink,
        "mass_loss": loss,
        "scale": _lst(s.scale),
        "contrast": _lst(s.mass),
    }


def _alignment(c: AlignmentConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng = stream.rng
    per = c.shift_px.sample(rng, size=(s.n, 2))
    offset = float(c.axis_offset_px.sample(rng))
    s.axis_angle = float(c.axis_angle_deg.sample(rng))
    s.shifts = per + np.array([0.0, offset])
    s.meta["alignment"] = {
        "shift_y_px": _lst(per[:, 0]),
        "shift_det_px": _lst(per[:, 1]),
        "axis_offset_px": offset,
        "axis_angle_deg": s.axis_angle,
        "total_shift_yt_px": _lst(s.shifts),
    }


def _warp(acq: AcquisitionConfig, _stream: None, s: AcquisitionState) -> None:
    """Damage's shrinkage and alignment's moves as one affine warp each, then the mass loss."""
    if s.scale is None and s.shifts is None:
        return
    scale = s.scale if s.scale is not None else np.ones(s.n)
    shifts = s.shifts if s.shifts is not None else np.zeros((s.n, 2))
    s.projections = warp_projections(s.projections, scale, shifts, s.axis_angle)
    if s.mass is not None:
        s.projections = s.projections * _f32(s.mass, s.device)[:, None, None]


def _flicker(c: FlickerConfig, stream: EffectStream, s: AcquisitionState) -> None:
    amp = float(c.amplitude.sample(stream.rng))
    maps = _texture2d_stack(s.n, s.shape[1:], c.scale_px, stream.gen, s.device)
    if c.model == "reference":
        means = s.projections.mean(dim=(1, 2), keepdim=True)
        added = maps * amp * means
        s.projections = s.projections + added
        per_proj = added.mean(dim=(1, 2))
    else:
        s.flat_factor = 1.0 + amp * (2.0 * maps - 1.0)
        per_proj = s.flat_factor.mean(dim=(1, 2))
    s.meta["flicker"] = {
        "model": c.model,
        "amplitude": amp,
        "scale_px": c.scale_px,
        "mean_per_projection": _lst(per_proj.cpu().numpy()),
    }


def _ice(c: IceConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng, size, dev = stream.rng, (s.n, *s.shape[1:]), s.device
    h = float(c.thickness_vox.sample(rng))
    if c.lac_per_um is None:
        ice_lac = torch.full(size, _material_lac("ice", s.energy_ev), device=dev)
        lac_desc = {"material": "ice", "lac_per_um": float(ice_lac[0, 0, 0])}
    else:
        ice_lac = sample_tensor(c.lac_per_um, size, stream.gen, rng, dev)
        lac_desc = {
            "lac_per_um_mean": float(ice_lac.mean()),
            "lac_per_um_sd": float(ice_lac.std()),
        }
    inv_cos = 1.0 / np.cos(np.deg2rad(np.abs(s.tilt.true_deg)))
    path = _f32(h * s.vox_um * inv_cos, dev)
    s.projections = s.projections + ice_lac * path[:, None, None]
    s.meta["ice"] = {
        "thickness_vox": h,
        "thickness_um": h * s.vox_um,
        **lac_desc,
        "optical_depth": _lst(h * s.vox_um * inv_cos * float(ice_lac.mean())),
    }


def _grid_mount(mount, stream: EffectStream, s: AcquisitionState) -> None:
    """A grid mount's support film and bars (a capillary's exterior is part of the projection)."""
    if mount is None or mount.kind != "grid" or not (mount.film.enabled or mount.bars.enabled):
        return
    drawn = draw_grid_mount(mount, stream.rng, s.energy_ev)
    if "film" in drawn:
        od = film_optical_depth(drawn["film"], s.tilt.true_deg)
        s.projections = s.projections + _f32(od, s.device)[:, None, None]
        drawn["film"]["optical_depth"] = _lst(od)
    if "bars" in drawn:
        od = bars_optical_depth(drawn["bars"], s.tilt.true_deg, s.shape[2], s.vox_um)
        s.projections = s.projections + _f32(od, s.device)[:, None, :]
        drawn["bars"]["max_optical_depth_per_projection"] = _lst(od.max(axis=1))
    s.meta["mount"] = {**drawn, "effect_id": EFFECT_ID["mount"]}


# -- 16-18. detector ------------------------------------------------------------------------------


def _rings(c: RingsConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng, (ny, nx) = stream.rng, s.shape[1:]
    frac = float(c.defect_fraction.sample(rng))
    n_def = int(round(frac * ny * nx))
    pix = np.sort(rng.choice(ny * nx, size=n_def, replace=False)) if n_def else np.zeros(0, int)
    err = c.gain_error.sample(rng, size=n_def)
    g = np.ones(ny * nx)
    g[pix] = 1.0 + err
    s.gain = _f32(g.reshape(ny, nx), s.device)
    s.meta["rings"] = {
        "defect_fraction": frac,
        "defects_y": (pix // nx).tolist(),
        "defects_det": (pix % nx).tolist(),
        "gain_error": _lst(err),
    }


def _noise(c: NoiseConfig, stream: EffectStream, s: AcquisitionState) -> None:
    rng, gen, dev = stream.rng, stream.gen, s.device
    dose = float(c.photons_per_pixel.sample(rng))
    read = float(c.read_noise.sample(rng))
    beam = torch.full((s.n, *s.shape[1:]), dose, device=dev)
    if s.flat_factor is not None:
        beam = beam * s.flat_factor
    if s.gain is not None:
        beam = beam * s.gain
    expected = beam * torch.exp(-s.projections)
    counts = torch.poisson(expected, generator=gen)
    if read > 0:
        counts = counts + read * torch.randn(counts.shape, generator=gen, device=dev)
    flat = _flat_field(c, dose, read, s.shape[1:], gen, dev)
    floor = 0.5
    clamped = int((counts < floor).sum())
    norm = counts.clamp_min(floor) / flat
    s.sinogram = -torch.log(norm) if s.sinogram_kind == "line-integrals" else norm
    s.meta["noise"] = {
        "photons_per_pixel": dose,
        "read_noise": read,
        "flat_frames": c.flat_frames,
        "counts_floor": floor,
        "clamped_pixels": clamped,
        "mean_counts": float(counts.mean()),
    }


def _flat_field(c: NoiseConfig, dose: float, read: float, shape2d, gen, dev) -> torch.Tensor:
    """The open-beam flat ``(Y, X)``: ``flat_frames`` noisy frames averaged, or noiseless."""
    if c.flat_frames <= 0:
        return torch.full(tuple(shape2d), dose, device=dev)
    flat = torch.poisson(
        torch.full(tuple(shape2d), dose * c.flat_frames, device=dev), generator=gen
    )
    if read > 0:
        flat = flat + read * math.sqrt(c.flat_frames) * torch.randn(
            flat.shape, generator=gen, device=dev
        )
    return flat.clamp_min(1.0) / c.flat_frames


def _sinogram(acq: AcquisitionConfig, _stream: None, s: AcquisitionState) -> None:
    """Without noise, the same detector model noiselessly; record the sinogram and the dose."""
    kind, n, (ny, nx) = s.sinogram_kind, s.n, s.shape[1:]
    if s.sinogram is None:
        sino = s.projections
        if s.flat_factor is not None:
            sino = sino - torch.log(s.flat_factor)
        if s.gain is not None:
            sino = sino - torch.log(s.gain)
        s.sinogram = torch.exp(-sino) if kind == "intensities" else sino
    s.meta["sinogram"] = {
        "kind": kind,
        "units": SINOGRAM_UNITS[kind],
        "shape": [n, ny, nx],
        "voxel_um": s.vox_um,
        "order": "sorted by nominal angle; tilt.series_pos gives the acquisition order",
    }
    noise = s.meta.get("noise")
    s.meta["dose"] = {
        "photons_per_pixel_per_projection": noise["photons_per_pixel"] if noise else None,
        "accumulated_before": _lst(
            s.tilt.series_pos * noise["photons_per_pixel"]
            if noise
            else s.tilt.series_pos.astype(float)
        ),
        "accumulated_unit": "photons/pixel" if noise else "projections",
    }


# -- the chain ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """One row of :data:`CHAIN`.

    Attributes
    ----------
    name : str
        The row's name: the key of its record in the meta and of its stream in :data:`EFFECT_ID`.
    stream_id : int or None
        Id of its random stream (appended to the spawn key); None for a deterministic step. Part
        of a dataset's identity: never renumber or reuse one.
    section : str
        Dotted path of its config section in :class:`factory.config.SimConfig`. The row runs only
        while the section's ``enabled`` is true (a section without one always runs).
    apply : callable
        ``apply(section, stream, state) -> None``: the section, the row's
        :class:`EffectStream` (None without a ``stream_id``) and the :class:`AcquisitionState`,
        which it updates; it records its draws in ``state.meta[name]``.
    """

    name: str
    stream_id: int | None
    section: str
    apply: Callable[[Any, EffectStream | None, AcquisitionState], None]

    def section_of(self, config) -> Any:
        return reduce(lambda obj, attr: getattr(obj, attr, None), self.section.split("."), config)


def _row(name: str, stream_id: int, apply: Callable, section: str | None = None) -> Effect:
    """A row with a random stream, switched by its section (default ``acquisition.<name>``)."""
    return Effect(name, stream_id, section or f"acquisition.{name}", apply)


def _step(name: str, apply: Callable) -> Effect:
    """A deterministic row (no stream) that always runs; it reads the ``acquisition`` section."""
    return Effect(name, None, "acquisition", apply)


# The physics in order: the module docstring's table, its space column as the comment (volume: LAC
# (Z, Y, X) in 1/µm; (draw): draws parameters only; proj: optical depth (angle, Y, X) at the true
# angles; det: counts, noise, flat-field normalisation → sinogram). Stream ids: never renumber or
# reuse.
# fmt: off
CHAIN: tuple[Effect, ...] = (
    _row("tilt", 0, _tilt),                             # angles
    _row("blur", 1, _blur),                             # volume
    _row("fiducials", 2, _fiducials),                   # volume
    _row("cracks", 3, _cracks),                         # volume
    _row("background_noise", 4, _background_noise),     # volume
    _step("clip_to_fov", _clip_to_fov),                 # volume
    _row("motion", 7, _motion),                         # (draw)
    _row("psf", 6, _psf),                               # (draw)
    _step("projection", _project),                      # → proj
    _row("damage", 5, _damage),                         # (draw)
    _row("alignment", 12, _alignment),                  # (draw)
    _step("warp", _warp),                               # proj
    _row("flicker", 9, _flicker),                       # proj
    _row("ice", 8, _ice),                               # proj
    _row("mount", 13, _grid_mount, "mount"),            # proj
    _row("rings", 11, _rings),                          # det
    _row("noise", 10, _noise),                          # det
    _step("sinogram", _sinogram),                       # det
)
# fmt: on

EFFECT_ID: dict[str, int] = dict(
    sorted(((e.name, e.stream_id) for e in CHAIN if e.stream_id is not None), key=lambda kv: kv[1])
)
"""Stream id of each effect, by id (from :data:`CHAIN`)."""

SUBSTREAM_RULE = (
    "numpy.random.SeedSequence(seed, spawn_key=(sample_index, STAGE_ID['acquisition'], "
    "effect_id)); "
    f"effect ids { {k: v for k, v in EFFECT_ID.items() if k != 'mount'} }; torch generators "
    "seeded with the second uint64 of that sequence"
)
# The rule's text predates the mount effect and is recorded in every sample, so the mount's id is
# recorded with its draws (meta["mount"]["effect_id"]) instead, leaving older samples' meta as is.


def simulate_acquisition(
    config, phantom, seed: int, *, index: int = 0, device="cpu"
) -> Acquisition:
    """Simulate the tilt series of ``phantom``: run :data:`CHAIN` (see the module docstring).

    Parameters
    ----------
    config : factory.config.SimConfig
        The whole config (``acquisition``, ``grid``, ``mount``, ``energy_ev``).
    phantom : factory.phantom.Phantom
        ``lac`` (Z, Y, X) in 1/µm and ``labels`` (Z, Y, X) uint8 of one shape; ``meta`` names a
        capillary mount, if any.
    seed, index : int
        The global seed and the sample index (one random stream per effect).
    device : str or torch.device
        Torch device for the arrays.

    Returns
    -------
    Acquisition
    """
    dev = torch.device(device)
    state = AcquisitionState.from_phantom(config, phantom, dev)
    streams = _Streams(seed, index, dev)
    for effect in CHAIN:
        section = effect.section_of(config)
        if getattr(section, "enabled", True):
            effect.apply(section, streams.of(effect), state)
    return state.result()
