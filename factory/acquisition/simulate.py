"""The acquisition stage: phantom → tilt series of a simulated cryo soft X-ray microscope.

Order of operations (each step on/off in :class:`~factory.acquisition.config.AcquisitionConfig`):

1. Tilt scheme (:mod:`factory.acquisition.tilt`): nominal angles, true angles, acquisition order.
2. Volume level, on the LAC volume (Z, Y, X) in 1/µm, as the reference: 3D Gaussian blur; gold
   fiducials, ice cracks and a 3D texture in the background (label 0) only. The result is the
   optional ``noisy_volume``.
3. Projection at the **true** angles with :mod:`factory.tomo`; with a depth PSF or rotation during
   the exposure, projected as depth slabs, each blurred by its own kernel (:mod:`.optics`);
   drift blur.
   A capillary wider than the grid gets its exterior added analytically (:mod:`.mount`).
   Line integrals are multiplied by the voxel size in µm: optical depth ``∫µ dl`` (dimensionless).
4. Sample motion between projections: dose-dependent shrinkage and mass loss (damage), shifts,
   tilt-axis offset and in-plane rotation (one affine warp per projection).
5. Beam flicker (reference: additive ∝ the projection's mean; flat-field: incident beam varies),
   the ice layer ``h · µ_ice · voxel_um / cos θ`` and a grid mount's support film and bars.
6. Detector: Beer–Lambert counts ``I0 · flicker · gain · exp(−p)``, Poisson photon noise, Gaussian
   read noise; detector defects have a gain that the flat field does not correct (→ rings).
7. Flat-field normalisation by the (noisy, averaged) open-beam flat, then ``−log`` back to line
   integrals (or kept as normalised intensities).

Randomness: every effect has its own stream, the acquisition stage's seed sequence
(:func:`factory.rng.seed_sequence`) with the effect's id appended to the spawn key
(:data:`EFFECT_ID`), so switching one effect on or off never changes another's draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

import schemas
from factory.acquisition.config import AcquisitionConfig
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
from factory.rng import seed_sequence

# Never renumber: the ids are part of a dataset's identity (like factory.rng.STAGE_ID).
EFFECT_ID: dict[str, int] = {
    "tilt": 0,
    "blur": 1,
    "fiducials": 2,
    "cracks": 3,
    "background_noise": 4,
    "damage": 5,
    "psf": 6,
    "motion": 7,
    "ice": 8,
    "flicker": 9,
    "noise": 10,
    "rings": 11,
    "alignment": 12,
    "mount": 13,
}

SUBSTREAM_RULE = (
    "numpy.random.SeedSequence(seed, spawn_key=(sample_index, STAGE_ID['acquisition'], "
    "effect_id)); "
    f"effect ids { {k: v for k, v in EFFECT_ID.items() if k != 'mount'} }; torch generators "
    "seeded with the first uint64 of that sequence"
)
# The rule's text predates the mount effect and is recorded in every sample, so the mount's id is
# recorded with its draws (meta["mount"]["effect_id"]) instead, leaving older samples' meta as is.

SINOGRAM_UNITS = {
    "line-integrals": "optical depth -log(I / I_flat) = integral of mu dl (mu in 1/um, l in um)",
    "intensities": "normalised intensity I / I_flat (dimensionless)",
}


@dataclass
class Acquisition:
    """One simulated tilt series.

    Attributes:
        sinogram: ``(n_angles, Y, det)`` float32, sorted by nominal angle; line integrals (optical
            depth) or normalised intensities, as ``meta["sinogram"]["kind"]`` says.
        angles_deg: ``(n_angles,)`` float64 nominal angles (what the reconstruction uses).
        noisy_volume: ``(Z, Y, X)`` float32 LAC (1/µm) after the volume-level effects, or None.
        meta: JSON-safe record of every drawn value.
        true_angles_deg: ``(n_angles,)`` the angles the projections were taken at.
        voxel_um: voxel edge in µm; ``shape``: the volume shape (Z, Y, X).
    """

    sinogram: torch.Tensor
    angles_deg: np.ndarray
    noisy_volume: torch.Tensor | None
    meta: dict
    true_angles_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    voxel_um: float = 1.0
    shape: tuple[int, int, int] = (0, 0, 0)
    sinogram_kind: str = "line-integrals"


class _Streams:
    """Per-effect numpy and torch random streams of one sample's acquisition."""

    def __init__(self, seed: int, index: int, device: torch.device):
        self._ss = seed_sequence(seed, index, "acquisition")
        self._device = device

    def _child(self, effect: str) -> np.random.SeedSequence:
        return np.random.SeedSequence(
            self._ss.entropy, spawn_key=tuple(self._ss.spawn_key) + (EFFECT_ID[effect],)
        )

    def np(self, effect: str) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self._child(effect)))

    def torch(self, effect: str) -> torch.Generator:
        # a second word of the same child sequence, so it differs from the numpy stream's seed
        state = self._child(effect).generate_state(2, dtype=np.uint64)[1]
        gen = torch.Generator(device=self._device)
        gen.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
        return gen


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


def _owned(vol: torch.Tensor, lac: torch.Tensor) -> torch.Tensor:
    """``vol``, or a copy of it while it is still the phantom's ``lac`` (an output field), so that
    the volume-level effects can be added in place (``vol.add_(x)``: the same float32 sums as
    ``vol + x`` without a second volume)."""
    return vol.clone() if vol is lac else vol


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


def _grid_mount(config, streams, angles_deg, proj: torch.Tensor, vox_um: float, meta: dict):
    """Add a grid mount's support film and bars to the optical depth ``proj`` (n, Y, det)."""
    mount = getattr(config, "mount", None)
    if mount is None or mount.kind != "grid" or not (mount.film.enabled or mount.bars.enabled):
        return proj
    drawn = draw_grid_mount(mount, streams.np("mount"), config.energy_ev)
    f32 = dict(dtype=torch.float32, device=proj.device)
    if "film" in drawn:
        od = film_optical_depth(drawn["film"], angles_deg)
        proj = proj + torch.as_tensor(od, **f32)[:, None, None]
        drawn["film"]["optical_depth"] = _lst(od)
    if "bars" in drawn:
        od = bars_optical_depth(drawn["bars"], angles_deg, proj.shape[2], vox_um)
        proj = proj + torch.as_tensor(od, **f32)[:, None, :]
        drawn["bars"]["max_optical_depth_per_projection"] = _lst(od.max(axis=1))
    meta["mount"] = {**drawn, "effect_id": EFFECT_ID["mount"]}
    return proj


def simulate_acquisition(
    config, phantom, seed: int, *, index: int = 0, device="cpu"
) -> Acquisition:
    """Simulate the tilt series of ``phantom`` (see the module docstring for the model).

    Args:
        config: the whole :class:`factory.config.SimConfig`.
        phantom: a :class:`factory.phantom.Phantom` (``lac`` (Z, Y, X) 1/µm, ``labels`` uint8).
        seed, index: the global seed and sample index (random streams per effect).
        device: torch device for the arrays.

    Returns:
        An :class:`Acquisition`.
    """
    acq: AcquisitionConfig = config.acquisition
    dev = torch.device(device)
    vox_um = float(config.grid.voxel_nm) * 1e-3
    lac = torch.as_tensor(phantom.lac).to(dev, torch.float32)
    labels = torch.as_tensor(phantom.labels).to(dev)
    shape = tuple(int(s) for s in lac.shape)
    if lac.ndim != 3 or tuple(labels.shape) != shape:
        raise ValueError(
            f"phantom: lac and labels must be (Z, Y, X) of one shape; got {tuple(lac.shape)} and "
            f"{tuple(labels.shape)}"
        )
    nz, ny, nx = shape
    streams = _Streams(seed, index, dev)
    meta: dict = {"substream_rule": SUBSTREAM_RULE}

    # 1. tilt scheme ------------------------------------------------------------------------------
    tilt: TiltScheme = draw_tilt_scheme(acq.tilt, streams.np("tilt"))
    n = tilt.n
    meta["tilt"] = tilt.to_meta()
    series_frac = tilt.series_pos / max(n - 1, 1)  # 0 for the first projection, 1 for the last

    # 2. volume level -----------------------------------------------------------------------------
    vol = lac
    cap = _capillary(phantom, config.grid.voxel_nm)
    # The background effects (beads, cracks, texture) go into the medium of a capillary.
    background = labels == (schemas.MEDIUM if cap is not None else schemas.BACKGROUND)
    if acq.blur.enabled:
        rng = streams.np("blur")
        sigma = float(acq.blur.sigma_vox.sample(rng))
        vol = gaussian_blur3d(vol, sigma, acq.blur.kernel_size)
        meta["blur"] = {"sigma_vox": sigma, "kernel_size": acq.blur.kernel_size}
    if acq.fiducials.enabled:
        c = acq.fiducials
        rng = streams.np("fiducials")
        count = max(0, c.count.sample_int(rng))
        radii = c.radius_vox.sample(rng, size=count)
        bead_lac = (
            float(c.lac_per_um.sample(rng))
            if c.lac_per_um is not None
            else _material_lac("gold", config.energy_ev)
        )
        vol = _owned(vol, lac)
        # ``background`` is ours (labels == id): the beads mark it in place, no copy needed
        beads = place_fiducials(vol, background, radii, bead_lac, rng)
        meta["fiducials"] = {"count": count, "lac_per_um": bead_lac, "beads": beads}
    if acq.cracks.enabled:
        c = acq.cracks
        rng, gen = streams.np("cracks"), streams.torch("cracks")
        strength = float(c.strength.sample(rng))
        count = max(0, c.count.sample_int(rng))
        centres = rng.uniform([0, 0, 0], [nz - 1, ny - 1, nx - 1], size=(count, 3))
        normals = unit_vectors(rng, count)
        extents = rng.uniform(0.25, 0.6, size=count) * min(shape)
        widths = c.width_vox.sample(rng, size=count)
        if count:
            warp = _texture3d(shape, c.modulation_scale_vox, 1, gen, dev)
            warp.sub_(0.5).mul_(0.1 * min(shape))
            cmap = crack_sheets(shape, centres, normals, extents, widths, warp, device=dev)
            del warp
            cmap = _unit_range(cmap) if float(cmap.max()) > 0 else cmap
            modulation = _texture3d(shape, c.modulation_scale_vox, 1, gen, dev)
            # strength · cmap · modulation · background, left to right, in cmap's memory
            _mul_mask_(cmap.mul_(strength).mul_(modulation), background)
            del modulation
            vol = _owned(vol, lac)
            vol.add_(cmap)
            del cmap
        meta["cracks"] = {
            "strength_per_um": strength,
            "count": count,
            "centres_zyx": _lst(centres),
            "normals_zyx": _lst(normals),
            "extents_vox": _lst(extents),
            "widths_vox": _lst(widths),
        }
    if acq.background_noise.enabled:
        c = acq.background_noise
        rng, gen = streams.np("background_noise"), streams.torch("background_noise")
        amp = float(c.amplitude.sample(rng))
        tex = _texture3d(shape, c.scale_vox, c.octaves, gen, dev)
        # (tex · fov) · amp · background, in tex's memory
        _mul_mask_(tex.mul_(cylinder_mask(shape, 2.0, dev)).mul_(amp), background)
        vol = _owned(vol, lac)
        vol.add_(tex)
        del tex
        meta["background_noise"] = {
            "amplitude_per_um": amp,
            "scale_vox": c.scale_vox,
            "octaves": c.octaves,
        }
    if acq.clip_to_fov:
        vol = _owned(vol, lac)
        vol.mul_(cylinder_mask(shape, 2.0, dev))
    del background, labels
    noisy_volume = (
        vol.clone()
        if (acq.keep_noisy_volume and vol is lac)
        else (vol if acq.keep_noisy_volume else None)
    )

    # 3. projection at the true angles, depth PSF and motion blur ---------------------------------
    from factory.tomo import ParallelProjector

    # A private projector, not the functional API's cache: the true angles are this sample's own,
    # and its matrix (~0.5 GB at 512² and 80 angles) is released as soon as the projections are
    # done instead of lingering through the reconstruction.
    projector = ParallelProjector((nz, nx), tilt.true_deg, det_count=nx, device=dev)
    psf_on = acq.psf.enabled
    sweep_deg = np.zeros(n)
    drift_yt = None
    if acq.motion.enabled:
        rng = streams.np("motion")
        sweep_deg = acq.motion.sweep_deg.sample(rng, size=n)
        drift_len = acq.motion.drift_px.sample(rng, size=n)
        drift_dir = rng.uniform(0.0, 2.0 * math.pi, size=n)
        drift_yt = np.stack([drift_len * np.sin(drift_dir), drift_len * np.cos(drift_dir)], 1)
        meta["motion"] = {
            "sweep_deg": _lst(sweep_deg),
            "drift_px": _lst(drift_len),
            "drift_direction_rad": _lst(drift_dir),
        }
        if not np.any(drift_len > 0):
            drift_yt = None
    slabs_needed = psf_on or bool(np.any(sweep_deg > 0))
    if slabs_needed:
        k = acq.psf.n_slabs
        centres = slab_centres((nz, nx), k)
        sigma_px = np.zeros((k, n))
        if psf_on:
            rng = streams.np("psf")
            sig_f = float(acq.psf.sigma_focus_nm.sample(rng))
            dof = float(acq.psf.depth_of_field_um.sample(rng))
            focal = float(acq.psf.focal_offset_um.sample(rng))
            delta_um = centres * vox_um - focal
            sig_k = sig_f / config.grid.voxel_nm * np.sqrt(1.0 + (2.0 * delta_um / dof) ** 2)
            sigma_px[:] = sig_k[:, None]
            meta["psf"] = {
                "model": "sigma(d) = sigma_focus * sqrt(1 + (2 d / dof)^2), "
                "d = depth - focal_offset",
                "sigma_focus_nm": sig_f,
                "depth_of_field_um": dof,
                "focal_offset_um": focal,
                "n_slabs": k,
                "slab_depth_um": _lst(centres * vox_um),
                "slab_sigma_px": _lst(sig_k),
            }
        sweep_px = np.abs(centres)[:, None] * np.deg2rad(sweep_deg)[None, :]
        slabs = depth_slab_projections(vol, projector, k)
        proj = blur_and_sum(
            slabs,
            torch.as_tensor(sigma_px, dtype=torch.float32),
            torch.as_tensor(sweep_px, dtype=torch.float32) if np.any(sweep_px > 0) else None,
            torch.as_tensor(drift_yt, dtype=torch.float32) if drift_yt is not None else None,
        )
        del slabs
    else:
        proj = projector.forward(vol)
        if drift_yt is not None:
            proj = blur_and_sum(
                proj[None],
                torch.zeros((1, n)),
                None,
                torch.as_tensor(drift_yt, dtype=torch.float32),
            )
    if cap is not None:
        clip = cylinder_mask(shape, 2.0, dev) if acq.clip_to_fov else None
        proj = proj + capillary_exterior(cap, shape, projector, tilt.true_deg, clip)
        meta["mount"] = {
            "kind": "capillary",
            "exterior": "exact line integrals of the whole capillary minus the projection of its "
            "voxelised cross-section (the part outside the grid); not blurred by the depth PSF",
        }
    projector.release()
    del projector, vol  # the volume lives on only as noisy_volume, if kept
    proj = proj * vox_um  # optical depth

    # 4. sample motion between projections: damage, shifts, axis misalignment ---------------------
    scale = np.ones(n)
    mass = np.ones(n)
    shifts = np.zeros((n, 2))
    axis_angle = 0.0
    if acq.damage.enabled:
        rng = streams.np("damage")
        shrink = float(acq.damage.shrinkage.sample(rng))
        loss = float(acq.damage.mass_loss.sample(rng))
        scale = 1.0 - shrink * series_frac
        mass = 1.0 - loss * series_frac
        meta["damage"] = {
            "model": "linear in the accumulated dose (acquisition order); shrink about the centre",
            "shrinkage": shrink,
            "mass_loss": loss,
            "scale": _lst(scale),
            "contrast": _lst(mass),
        }
    if acq.alignment.enabled:
        rng = streams.np("alignment")
        per = acq.alignment.shift_px.sample(rng, size=(n, 2))
        offset = float(acq.alignment.axis_offset_px.sample(rng))
        axis_angle = float(acq.alignment.axis_angle_deg.sample(rng))
        shifts = per + np.array([0.0, offset])
        meta["alignment"] = {
            "shift_y_px": _lst(per[:, 0]),
            "shift_det_px": _lst(per[:, 1]),
            "axis_offset_px": offset,
            "axis_angle_deg": axis_angle,
            "total_shift_yt_px": _lst(shifts),
        }
    if acq.damage.enabled or acq.alignment.enabled:
        proj = warp_projections(proj, scale, shifts, axis_angle)
        if acq.damage.enabled:
            proj = proj * torch.as_tensor(mass, dtype=torch.float32, device=dev)[:, None, None]

    # 5. flicker and ice ---------------------------------------------------------------------------
    flat_factor = None  # incident-beam variation (flat-field flicker model)
    if acq.flicker.enabled:
        c = acq.flicker
        rng, gen = streams.np("flicker"), streams.torch("flicker")
        amp = float(c.amplitude.sample(rng))
        maps = _texture2d_stack(n, (ny, nx), c.scale_px, gen, dev)
        if c.model == "reference":
            means = proj.mean(dim=(1, 2), keepdim=True)
            added = maps * amp * means
            proj = proj + added
            per_proj = added.mean(dim=(1, 2))
        else:
            flat_factor = 1.0 + amp * (2.0 * maps - 1.0)
            per_proj = flat_factor.mean(dim=(1, 2))
        meta["flicker"] = {
            "model": c.model,
            "amplitude": amp,
            "scale_px": c.scale_px,
            "mean_per_projection": _lst(per_proj.cpu().numpy()),
        }
    if acq.ice.enabled:
        c = acq.ice
        rng, gen = streams.np("ice"), streams.torch("ice")
        h = float(c.thickness_vox.sample(rng))
        if c.lac_per_um is None:
            ice_lac = torch.full((n, ny, nx), _material_lac("ice", config.energy_ev), device=dev)
            lac_desc = {"material": "ice", "lac_per_um": float(ice_lac[0, 0, 0])}
        else:
            ice_lac = sample_tensor(c.lac_per_um, (n, ny, nx), gen, rng, dev)
            lac_desc = {
                "lac_per_um_mean": float(ice_lac.mean()),
                "lac_per_um_sd": float(ice_lac.std()),
            }
        inv_cos = 1.0 / np.cos(np.deg2rad(np.abs(tilt.true_deg)))
        path = torch.as_tensor(h * vox_um * inv_cos, dtype=torch.float32, device=dev)
        proj = proj + ice_lac * path[:, None, None]
        meta["ice"] = {
            "thickness_vox": h,
            "thickness_um": h * vox_um,
            **lac_desc,
            "optical_depth": _lst(h * vox_um * inv_cos * float(ice_lac.mean())),
        }

    proj = _grid_mount(config, streams, tilt.true_deg, proj, vox_um, meta)

    # 6. detector ---------------------------------------------------------------------------------
    gain = None
    if acq.rings.enabled:
        c = acq.rings
        rng = streams.np("rings")
        frac = float(c.defect_fraction.sample(rng))
        n_def = int(round(frac * ny * nx))
        pix = np.sort(rng.choice(ny * nx, size=n_def, replace=False)) if n_def else np.zeros(0, int)
        err = c.gain_error.sample(rng, size=n_def)
        g = np.ones(ny * nx)
        g[pix] = 1.0 + err
        gain = torch.as_tensor(g.reshape(ny, nx), dtype=torch.float32, device=dev)
        meta["rings"] = {
            "defect_fraction": frac,
            "defects_y": (pix // nx).tolist(),
            "defects_det": (pix % nx).tolist(),
            "gain_error": _lst(err),
        }
    kind = acq.sinogram
    if acq.noise.enabled:
        c = acq.noise
        rng, gen = streams.np("noise"), streams.torch("noise")
        dose = float(c.photons_per_pixel.sample(rng))
        read = float(c.read_noise.sample(rng))
        beam = torch.full((n, ny, nx), dose, device=dev)
        if flat_factor is not None:
            beam = beam * flat_factor
        if gain is not None:
            beam = beam * gain
        expected = beam * torch.exp(-proj)
        counts = torch.poisson(expected, generator=gen)
        if read > 0:
            counts = counts + read * torch.randn(counts.shape, generator=gen, device=dev)
        if c.flat_frames > 0:
            flat = torch.poisson(
                torch.full((ny, nx), dose * c.flat_frames, device=dev), generator=gen
            )
            if read > 0:
                flat = flat + read * math.sqrt(c.flat_frames) * torch.randn(
                    flat.shape, generator=gen, device=dev
                )
            flat = flat.clamp_min(1.0) / c.flat_frames
        else:
            flat = torch.full((ny, nx), dose, device=dev)
        floor = 0.5
        clamped = int((counts < floor).sum())
        norm = counts.clamp_min(floor) / flat
        sino = -torch.log(norm) if kind == "line-integrals" else norm
        meta["noise"] = {
            "photons_per_pixel": dose,
            "read_noise": read,
            "flat_frames": c.flat_frames,
            "counts_floor": floor,
            "clamped_pixels": clamped,
            "mean_counts": float(counts.mean()),
        }
    else:
        sino = proj
        if flat_factor is not None:
            sino = sino - torch.log(flat_factor)
        if gain is not None:
            sino = sino - torch.log(gain)
        if kind == "intensities":
            sino = torch.exp(-sino)
    meta["sinogram"] = {
        "kind": kind,
        "units": SINOGRAM_UNITS[kind],
        "shape": [n, ny, nx],
        "voxel_um": vox_um,
        "order": "sorted by nominal angle; tilt.series_pos gives the acquisition order",
    }
    meta["dose"] = {
        "photons_per_pixel_per_projection": meta.get("noise", {}).get("photons_per_pixel"),
        "accumulated_before": _lst(
            tilt.series_pos * meta["noise"]["photons_per_pixel"]
            if "noise" in meta
            else tilt.series_pos.astype(float)
        ),
        "accumulated_unit": "photons/pixel" if "noise" in meta else "projections",
    }
    return Acquisition(
        sinogram=sino.to(torch.float32).contiguous(),
        angles_deg=tilt.nominal_deg.copy(),
        noisy_volume=noisy_volume,
        meta=meta,
        true_angles_deg=tilt.true_deg.copy(),
        voxel_um=vox_um,
        shape=shape,
        sinogram_kind=kind,
    )
