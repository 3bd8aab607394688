"""Config sections ``acquisition`` and ``reconstruction`` (owned by :mod:`factory.acquisition`).

Every effect is a sub-section with an ``enabled`` switch; its random quantities are
:class:`~factory.params.Dist` values. Each field's description says whether it is drawn once per
sample, once per projection or once per pixel. The defaults describe an ideal acquisition (full
180°, no artifact, no noise), so a preset only lists what it turns on.

Units: lengths in voxels (``_vox``) or detector pixels (``_px``, pitch = one voxel) unless the name
says ``_nm``/``_um``; angles in degrees; LAC in 1/µm; doses in photons per detector pixel.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_serializer, model_validator

from factory.params import Bounds, Dist, StrictModel

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def _c(value: float) -> Dist:
    return Dist(const=value)


# Where a draw may lie (factory.params.Bounds, checked at load); more bounds are given per field.
NonNeg = Annotated[Dist, Bounds(lo=0.0)]
Positive = Annotated[Dist, Bounds(lo=0.0, lo_open=True)]


class EffectConfig(StrictModel):
    """Base of an effect's section: the effect runs only while ``enabled`` (off by default)."""

    enabled: bool = False


class TiltConfig(StrictModel):
    """The tilt scheme. Nominal angles ``-range/2 + shift + k·step`` for ``k < range/step`` (the
    reference's ``arange(-θ/2, θ/2, step)``, end excluded), some dropped, each with an error.

    Ranges above 180° (up to 360°: a full rotation) need a capillary mount (``mount.kind``); a few
    projections may be *bad* (``bad_fraction``): taken at an angle off by a large error
    (``bad_error_deg``, a stage jolt), which the reconstruction does not know.
    """

    range_deg: Annotated[Dist, Bounds(lo=0.0, hi=360.0, lo_open=True)] = Field(
        _c(180.0), description="total tilt range θ in degrees (at most 360), per sample"
    )
    step_deg: float = Field(1.0, gt=0, description="nominal angular step in degrees")
    shift_deg: Dist = Field(
        _c(0.0), description="shift of the whole range (asymmetric wedge), per sample"
    )
    shift_below_deg: float = Field(
        180.0,
        description="the shift applies only when the drawn range is below this (reference: 165)",
    )
    drop_fraction: Annotated[Dist, Bounds(lo=0.0, hi=0.95)] = Field(
        _c(0.0),
        description="fraction of projections dropped at random, per sample (int(n·f) dropped)",
    )
    angle_error_deg: Dist = Field(
        _c(0.0),
        description="error of the true angle, per projection (projection uses nominal + error)",
    )
    order: Literal["sequential", "dose-symmetric"] = Field(
        "sequential", description="acquisition order: low to high angle, or Hagen's dose-symmetric"
    )
    group_size: int = Field(
        1, ge=1, description="dose-symmetric: projections per side before switching"
    )
    bad_fraction: Annotated[Dist, Bounds(lo=0.0, hi=0.5)] = Field(
        _c(0.0),
        description="fraction of the kept projections that are bad, per sample (int(n·f) of them)",
    )
    bad_error_deg: Annotated[Dist, Bounds(lo=-90.0, hi=90.0)] = Field(
        Dist(normal=(0.0, 2.0), clamp=(-6.0, 6.0)),
        description="extra angle error of a bad projection, per bad projection",
    )

    @model_serializer(mode="wrap")
    def _drop_default_bad(self, handler):
        """Without bad projections their fields are left out of the resolved config, so configs
        written before they existed keep their JSON and sha256."""
        data = handler(self)
        if self.bad_fraction.bounds == (0.0, 0.0):
            default = type(self).model_fields["bad_error_deg"].default
            data.pop("bad_fraction", None)
            if self.bad_error_deg == default:
                data.pop("bad_error_deg", None)
        return data

    @model_validator(mode="after")
    def _check(self) -> TiltConfig:
        lo, hi = self.range_deg.bounds
        if hi < self.step_deg:
            raise ValueError(f"step_deg: {self.step_deg} is larger than the tilt range {hi}")
        s_lo, s_hi = self.shift_deg.bounds
        shifted_hi = min(hi, self.shift_below_deg)
        if lo < self.shift_below_deg and (s_lo != 0.0 or s_hi != 0.0):
            reach = shifted_hi / 2 + max(abs(s_lo), abs(s_hi))
            if not math.isfinite(reach) or reach > 90.0:
                raise ValueError(
                    f"shift_deg: a range of {shifted_hi}° shifted by up to "
                    f"{max(abs(s_lo), abs(s_hi))}° reaches {reach}°, beyond ±90° (clamp the shift)"
                )
        return self


class NoiseConfig(EffectConfig):
    """Photon (Poisson) noise at a dose, detector read noise, and the flat field that normalises."""

    photons_per_pixel: Annotated[
        Dist, Bounds(lo=0.0, lo_open=True, name="photons_per_pixel (dose)")
    ] = Field(
        _c(1e4),
        description="open-beam photons per detector pixel per projection (dose), per sample",
    )
    read_noise: NonNeg = Field(
        _c(0.0), description="sd of the Gaussian read noise in photon-equivalent counts, per sample"
    )
    flat_frames: int = Field(
        10, ge=0, description="open-beam frames averaged into the flat field (0: a noiseless flat)"
    )


class VolumeBlurConfig(EffectConfig):
    """3D Gaussian blur of the LAC volume before projection (the reference's 'detector blur')."""

    sigma_vox: NonNeg = Field(_c(1.0), description="Gaussian sigma in voxels, per sample")
    kernel_size: int | None = Field(
        5, ge=1, description="odd kernel width in voxels (reference: 5); null: 2·ceil(3σ)+1"
    )

    @model_validator(mode="after")
    def _check(self) -> VolumeBlurConfig:
        if self.kernel_size is not None and self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: must be odd, got {self.kernel_size}")
        return self


class FiducialConfig(EffectConfig):
    """Gold beads placed in the background only (they never touch a labelled object)."""

    count: NonNeg = Field(_c(10), description="number of beads, per sample")
    radius_vox: Annotated[Dist, Bounds(lo=0.5)] = Field(
        _c(4.8), description="bead radius in voxels, per bead"
    )
    lac_per_um: Dist | None = Field(
        None, description="bead LAC in 1/µm, per sample; null: gold at energy_ev (xraylib)"
    )


class CracksConfig(EffectConfig):
    """Ice cracks: thin curved sheets × a low-frequency noise map × strength, background only."""

    strength: Dist = Field(_c(0.2), description="LAC added at a crack's centre, 1/µm, per sample")
    count: NonNeg = Field(_c(3), description="number of cracks, per sample")
    width_vox: Annotated[Dist, Bounds(lo=0.1)] = Field(
        _c(1.5), description="crack half-width (Gaussian sd) in voxels, per crack"
    )
    modulation_scale_vox: float = Field(
        64.0, gt=0, description="feature size of the low-frequency map that modulates the cracks"
    )


class BackgroundNoiseConfig(EffectConfig):
    """High-frequency 3D noise texture (in [0, 1]) × amplitude added to the background only."""

    amplitude: Dist = Field(_c(0.1), description="LAC amplitude in 1/µm, per sample")
    scale_vox: float = Field(4.0, gt=0, description="feature size of the texture in voxels")
    octaves: int = Field(2, ge=1, le=8, description="fractal octaves of the texture")


class IceConfig(EffectConfig):
    """A flat ice layer of thickness h around the sample: path h/cos θ added to every ray.

    The reference's units: ``h`` in voxels and an absorption in LAC units (1/µm) drawn per pixel,
    so the optical depth added is ``h · absorption · voxel_um / cos θ``.
    """

    thickness_vox: NonNeg = Field(_c(100.0), description="layer thickness h in voxels, per sample")
    lac_per_um: Dist | None = Field(
        None,
        description="LAC of the layer in 1/µm, per detector pixel; null: water ice at energy_ev",
    )


class FlickerConfig(EffectConfig):
    """Beam flicker: a smooth per-projection map (in [0, 1]) × amplitude.

    ``reference``: added to the line integrals as ``map · amplitude · mean(projection)``;
    ``flat-field``: the incident beam of projection i is ``I0 · (1 + amplitude · (2·map − 1))``
    while the flat field is the unflickered beam, so ``−log(1 + a(2m − 1))`` remains in the data.
    """

    amplitude: NonNeg = Field(_c(0.05), description="flicker amplitude, per sample")
    model: Literal["reference", "flat-field"] = "flat-field"
    scale_px: float = Field(64.0, gt=0, description="feature size of the flicker map in pixels")

    @model_validator(mode="after")
    def _check(self) -> FlickerConfig:
        if self.model == "flat-field":
            Bounds(hi=0.99).check(self.amplitude, "amplitude")
        return self


class PSFConfig(EffectConfig):
    """Depth-dependent PSF of the objective: ``σ(Δ) = σ_f · sqrt(1 + (2Δ / DOF)²)``.

    ``Δ`` is the distance along the beam from the focal plane (through the tilt axis, shifted by
    ``focal_offset_um``); the blur is a 2D Gaussian on the detector. Implemented by projecting
    ``n_slabs`` depth slabs (hat-weighted, so exact in sum) and blurring each by its own σ.
    """

    sigma_focus_nm: NonNeg = Field(
        _c(20.0), description="in-focus Gaussian sigma in nm, per sample"
    )
    depth_of_field_um: Positive = Field(
        _c(3.0), description="full depth of field in µm, per sample"
    )
    focal_offset_um: Dist = Field(
        _c(0.0), description="focal plane offset from the axis, µm, per sample"
    )
    n_slabs: int = Field(8, ge=2, le=64, description="depth slabs the volume is split into")

    def max_sigma_vox(self, shape: tuple[int, int, int], voxel_nm: float) -> float:
        """Largest σ (voxels) any draw can give at the farthest depth of a volume of ``shape``."""
        nz, _, nx = shape
        depth_um = (0.5 * math.hypot(nz, nx) * voxel_nm * 1e-3) + max(
            abs(b) for b in self.focal_offset_um.bounds
        )
        sig_nm = self.sigma_focus_nm.bounds[1]
        dof = self.depth_of_field_um.bounds[0]
        return sig_nm / voxel_nm * math.sqrt(1.0 + (2.0 * depth_um / dof) ** 2)


class MotionConfig(EffectConfig):
    """Motion within one exposure: rotation by ``sweep_deg`` (a voxel at depth s moves s·Δθ on the
    detector, so the blur grows with depth) and a translation by ``drift_px`` (random direction)."""

    sweep_deg: Annotated[Dist, Bounds(lo=0.0, hi=10.0)] = Field(
        _c(0.0), description="rotation during an exposure, degrees, per projection"
    )
    drift_px: NonNeg = Field(
        _c(0.0), description="translation during an exposure, pixels, per projection"
    )


class AlignmentConfig(EffectConfig):
    """Misalignment between projections: shifts, a tilt-axis offset and an in-plane axis rotation.

    The reconstruction assumes none of them; the true values are recorded.
    """

    shift_px: Dist = Field(
        _c(0.0), description="shift along Y and along the detector, per projection"
    )
    axis_offset_px: Dist = Field(
        _c(0.0), description="tilt axis offset along the detector, per sample"
    )
    axis_angle_deg: Annotated[Dist, Bounds(lo=-45.0, hi=45.0)] = Field(
        _c(0.0), description="in-plane rotation of the tilt axis, per sample"
    )


class RingsConfig(EffectConfig):
    """Detector defects: pixels whose gain differs between flat field and projections (→ rings)."""

    defect_fraction: Annotated[Dist, Bounds(lo=0.0, hi=1.0)] = Field(
        _c(0.002), description="fraction of defective pixels, per sample"
    )
    gain_error: Annotated[Dist, Bounds(lo=-0.99)] = Field(
        Dist(normal=(0.0, 0.05), clamp=(-0.5, 0.5)),
        description="relative gain error of a defective pixel, per pixel",
    )


class DamageConfig(EffectConfig):
    """Radiation damage over the series, linear in the accumulated dose (acquisition order):
    isotropic shrinkage about the volume centre and loss of contrast (mass loss)."""

    shrinkage: Annotated[Dist, Bounds(lo=0.0, hi=0.5)] = Field(
        _c(0.01), description="relative linear shrinkage at the end, per sample"
    )
    mass_loss: Annotated[Dist, Bounds(lo=0.0, hi=1.0)] = Field(
        _c(0.05), description="relative LAC loss at the end of the series, per sample"
    )


class AcquisitionConfig(StrictModel):
    """The simulated microscope: tilt scheme, volume-level effects, image formation."""

    tilt: TiltConfig = TiltConfig()
    # volume level, applied in this order (as the reference)
    blur: VolumeBlurConfig = VolumeBlurConfig()
    fiducials: FiducialConfig = FiducialConfig()
    cracks: CracksConfig = CracksConfig()
    background_noise: BackgroundNoiseConfig = BackgroundNoiseConfig()
    # image formation, applied in the order of factory.acquisition.simulate.CHAIN (not this one)
    damage: DamageConfig = DamageConfig()
    psf: PSFConfig = PSFConfig()
    motion: MotionConfig = MotionConfig()
    ice: IceConfig = IceConfig()
    flicker: FlickerConfig = FlickerConfig()
    noise: NoiseConfig = NoiseConfig()
    rings: RingsConfig = RingsConfig()
    alignment: AlignmentConfig = AlignmentConfig()
    sinogram: Literal["line-integrals", "intensities"] = Field(
        "line-integrals",
        description="what the stored sinogram holds: −log(I/flat), or I/flat (normalised)",
    )
    clip_to_fov: bool = Field(
        False,
        description="zero the volume outside the field-of-view cylinder (radius min(Z, X)/2 − 2) "
        "before projection, as the reference does",
    )
    keep_noisy_volume: bool = Field(False, description="also return the volume before projection")

    def check_with(self, config) -> None:
        """Cross-checks against the grid (called by :class:`factory.config.SimConfig`)."""
        shape, voxel_nm = tuple(config.grid.shape), config.grid.voxel_nm
        width = min(shape[1], shape[2])
        if self.psf.enabled:
            sig = self.psf.max_sigma_vox(shape, voxel_nm)
            if 2.355 * sig > width:
                raise ValueError(
                    f"acquisition.psf: the PSF reaches FWHM {2.355 * sig:.1f} px at the edge, "
                    f"wider than the detector ({width} px); lower sigma_focus_nm or raise "
                    "depth_of_field_um"
                )
        if self.blur.enabled:
            hi = self.blur.sigma_vox.bounds[1]
            if 2.355 * hi > min(shape):
                raise ValueError(
                    f"acquisition.blur.sigma_vox: FWHM {2.355 * hi:.1f} voxels is wider than the "
                    f"volume ({min(shape)} voxels)"
                )
        if self.fiducials.enabled and 2 * self.fiducials.radius_vox.bounds[1] >= min(shape):
            raise ValueError(
                f"acquisition.fiducials.radius_vox: a bead of radius "
                f"{self.fiducials.radius_vox.bounds[1]} does not fit in {min(shape)} voxels"
            )


class ReconstructionConfig(StrictModel):
    """Reconstruction from the nominal geometry, then optional normalisation."""

    method: Literal["fbp", "sirt"] = "fbp"
    filter: str = Field(
        "hamming", description="FBP filter: ramp, shepp-logan, cosine, hamming, hann"
    )
    iterations: int = Field(50, ge=1, description="SIRT iterations")
    nonneg: bool = Field(True, description="SIRT: clip negative values after every update")
    normalize: Literal["quantile", "none"] = Field(
        "quantile",
        description="quantile: values inside the circular FOV mapped by rank to a standard normal, "
        "0 outside (the reference); none: LAC in 1/µm",
    )
    fov_inset_px: float = Field(
        5.0, ge=0, description="the FOV circle's radius is min(Z, X)/2 − inset"
    )

    @model_validator(mode="after")
    def _check(self) -> ReconstructionConfig:
        if self.filter not in FILTERS:
            raise ValueError(f"filter: must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        return self
