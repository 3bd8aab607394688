"""Config section ``phantom``: yeast cells and their organelles (owned by the phantom stage).

Lengths are in voxels of the configured grid (fields end in ``_vox``); ``scale`` multiplies every
object radius after drawing (the SimAQ reference draws radii, then scales the geometry ×1.2). LACs
are in 1/µm and default to the cited values of :mod:`factory.materials` (measured near 517 eV; with
``scale_lac_with_energy`` they follow the configured photon energy). Random quantities are
:class:`factory.params.Dist`; counts are rounded draws (the reference's ``max(1, int(N(m, s)))`` is
``{normal: [m - 0.5, s], clamp: [1, ..]}`` here, since ``int`` truncates and ``round(x - 0.5)`` is
``floor(x)``).

Validation happens at load (:class:`factory.errors.ConfigError` naming the field and value): unknown
keys, sizes or counts that a draw could make negative, ranges with min > max, and organelles or cells
that cannot fit (in the cell, or in the grid).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from factory.params import Bounds, Dist, StrictModel, show


def _measured(name: str, n_sd: float = 4.0) -> Dist:
    """Default LAC distribution of a measured material: its Gaussian, clamped to ±4 sd and >= 0."""
    from factory.materials import MATERIALS

    m = MATERIALS[name]
    return Dist(
        normal=(m.mean, m.sd),
        clamp=(round(max(0.0, m.mean - n_sd * m.sd), 6), round(m.mean + n_sd * m.sd, 6)),
    )


# What a draw may be (factory.params.Bounds, checked at load): sizes, counts and LACs never
# negative, radii and scales never zero or negative.
Size = Annotated[Dist, Bounds(lo=0, what="size")]
PositiveSize = Annotated[Dist, Bounds(lo=0, lo_open=True, what="size")]
Count = Annotated[Dist, Bounds(lo=0, what="count")]
LAC = Annotated[Dist, Bounds(lo=0, what="LAC")]
_FINITE = Bounds(-math.inf, math.inf, lo_open=True, hi_open=True, msg="clamp the normal; got {got}")


def _check_range(r: tuple[float, float], field: str, lo: float = 0.0) -> tuple[float, float]:
    if r[0] > r[1]:
        raise ValueError(f"{field}: needs min <= max, got {list(r)}")
    if r[0] < lo:
        raise ValueError(f"{field}: values must be >= {lo}, got {list(r)}")
    return r


class DeformationConfig(StrictModel):
    """Smooth elastic deformation of each cell: a Perlin displacement field (3 components).

    Each component is ``amplitude_vox * perlin(scale_vox)`` (3 components in 3D, Z and X in 2D), so
    a displacement never exceeds ``sqrt(3) * amplitude_vox``; the field is applied to the coordinates at which every shape of the
    cell is evaluated, so nesting and non-overlap survive the deformation exactly.
    """

    enabled: bool = True
    mode: Literal["3d", "2d"] = Field(
        "3d",
        description="3d: a 3D displacement field; 2d: one (Z, X) field applied to every Y slice "
        "(Y is the tilt axis), as the SimAQ reference deforms each slice alike (and faster)",
    )
    amplitude_vox: Size = Field(Dist(const=3.0), description="peak displacement per axis, voxels")
    scale_vox: PositiveSize = Field(
        Dist(const=40.0), description="feature size of the field, voxels"
    )

    @model_validator(mode="after")
    def _no_folds(self) -> DeformationConfig:
        # |grad D| ~ 2.5 amplitude / scale for Perlin noise: keep the map x -> x + D(x) one-to-one.
        if self.enabled and self.amplitude_vox.bounds[1] > 0.25 * self.scale_vox.bounds[0]:
            raise ValueError(
                f"amplitude_vox: at most 0.25 x scale_vox (else the field folds space); got "
                f"amplitude {show(self.amplitude_vox)} with scale {show(self.scale_vox)}"
            )
        return self


class BuddingConfig(StrictModel):
    """Optional bud: a daughter ellipsoid joined to its mother through an open neck."""

    probability: float = Field(0.0, ge=0.0, le=1.0, description="chance that a cell has a bud")
    size_ratio: Annotated[PositiveSize, Bounds(hi=1, msg="must be <= 1, got {got}")] = Field(
        Dist(uniform=(0.35, 0.6)), description="daughter radii / mother radii"
    )
    neck: Annotated[
        Dist, Bounds(lo=0.05, hi=0.5, msg="every draw must lie in [0.05, 0.5], got {got}")
    ] = Field(
        Dist(uniform=(0.15, 0.3)),
        description="fraction of the daughter radius that overlaps the mother (neck width)",
    )


class CellsConfig(StrictModel):
    """Yeast cells: ellipsoids (radii drawn per axis) with a wall shell, placed without overlap."""

    count: Annotated[Count, Bounds(hi=64, msg="at most 64 cells per volume, got {got}")] = Field(
        Dist(const=1), description="cells requested per volume (rounded)"
    )
    radius_vox: PositiveSize = Field(
        Dist(normal=(50.0, 2.5), clamp=(40.0, 60.0)), description="radius per axis, before scale"
    )
    wall_thickness_vox: Size = Field(Dist(uniform=(1.0, 1.5)), description="cell wall shell")
    lac: LAC = Field(default_factory=lambda: _measured("cytoplasm"), description="cytoplasm")
    wall_lac: LAC = Field(default_factory=lambda: _measured("cell_wall"))
    gap_vox: float = Field(2.0, ge=0.0, description="minimum clearance between two cells")
    z_jitter_vox: Dist = Field(
        Dist(normal=(0.0, 5.0)), description="offset of each cell centre from the mid-plane in Z"
    )
    xy_jitter_vox: Dist = Field(
        Dist(normal=(0.0, 10.0)), description="offset of the first cell from the centre in Y, X"
    )
    orientation: Literal["random", "axis"] = Field(
        "random", description="random 3D rotation of each cell, or axis-aligned"
    )
    deformation: DeformationConfig = DeformationConfig()
    budding: BuddingConfig = BuddingConfig()


class FragmentationConfig(StrictModel):
    """Vacuole fragmentation into a depth-1 3D Apollonian sphere packing (9 spheres).

    The packing fills the vacuole; each sphere shrinks to ``fill`` of its radius about its own centre
    (so fragments never touch), is kept with ``keep_probability``, and a kept fragment of radius
    below ``ld_radius_max_vox`` (x scale) becomes a lipid droplet with ``ld_probability``.
    """

    probability: float = Field(0.0, ge=0.0, le=1.0)
    keep_probability: float = Field(0.7, ge=0.0, le=1.0)
    fill: float = Field(0.9, gt=0.0, lt=1.0)
    ld_radius_max_vox: float = Field(8.0, ge=0.0)
    ld_probability: float = Field(0.3, ge=0.0, le=1.0)


class VacuolesConfig(StrictModel):
    """Vacuoles: near-spherical ellipsoids inside the cell, never overlapping each other."""

    enabled: bool = True
    count: Count = Field(Dist(normal=(2.0, 2.0), clamp=(1.0, 4.0)))
    radius_vox: PositiveSize = Field(
        Dist(normal=(38.0, 8.0), clamp=(1.0, 80.0)), description="base draw"
    )
    divide_by_count: bool = Field(True, description="divide the base radius by the count")
    axis_jitter: float = Field(0.05, ge=0.0, lt=1.0, description="per-axis relative jitter ±")
    radius_clamp_vox: tuple[float, float] | None = Field(
        (25.0, 45.0), description="clamp of each axis radius after jitter, before scale"
    )
    margin: float = Field(0.95, gt=0.0, le=1.0, description="inside margin x the cell interior")
    gap_vox: float = Field(1.0, ge=0.0, description="clearance to other vacuoles and the nucleus")
    tries: int = Field(25, ge=1, le=10_000)
    lac: LAC = Field(default_factory=lambda: _measured("vacuole"))
    fragmentation: FragmentationConfig = FragmentationConfig()

    @field_validator("radius_clamp_vox")
    @classmethod
    def _clamp(cls, v):
        if v is not None:
            _check_range(v, "radius_clamp_vox")
            if v[0] <= 0:
                raise ValueError(f"radius_clamp_vox: min must be > 0, got {list(v)}")
        return v

    def radius_bounds(self) -> tuple[float, float]:
        """Smallest and largest axis radius a draw can give (voxels, before ``scale``)."""
        lo, hi = self.radius_vox.bounds
        if self.divide_by_count:
            clo, chi = self.count.bounds
            lo, hi = lo / max(1.0, round(chi)), hi / max(1.0, round(clo))
        lo, hi = lo * (1 - self.axis_jitter), hi * (1 + self.axis_jitter)
        if self.radius_clamp_vox is not None:
            lo = min(max(lo, self.radius_clamp_vox[0]), self.radius_clamp_vox[1])
            hi = min(max(hi, self.radius_clamp_vox[0]), self.radius_clamp_vox[1])
        return lo, hi


class LipidDropletsConfig(StrictModel):
    """Lipid droplets: spheres in the cell, no contact, wholly inside a vacuole or wholly outside."""

    enabled: bool = True
    count: Count = Field(Dist(normal=(15.0, 5.0), clamp=(3.0, 30.0)))
    radius_vox: PositiveSize = Field(Dist(normal=(6.0, 1.0), clamp=(5.0, 8.0)))
    gap_vox: float = Field(1.0, ge=0.0, description="clearance between droplets (no contact)")
    tries: int = Field(100, ge=1, le=10_000)
    lac: LAC = Field(default_factory=lambda: _measured("lipid_droplet"))


class NucleolusConfig(StrictModel):
    """The denser nucleolus: a sphere inside the nucleus, towards its periphery (label: nucleus)."""

    enabled: bool = True
    radius_fraction: Annotated[
        PositiveSize, Bounds(hi=1, hi_open=True, msg="must stay < 1, got {got}")
    ] = Field(Dist(uniform=(0.3, 0.45)), description="radius / nucleus smallest radius")
    lac: LAC = Field(default_factory=lambda: _measured("nucleolus"))


class NucleusConfig(StrictModel):
    """One nucleus per cell: an ellipsoid placed first, off-centre, with a nucleolus."""

    enabled: bool = False
    radius_vox: PositiveSize = Field(Dist(normal=(30.0, 3.0), clamp=(20.0, 40.0)))
    axis_jitter: float = Field(0.1, ge=0.0, lt=1.0)
    margin: float = Field(0.9, gt=0.0, le=1.0, description="inside margin x the cell interior")
    offset: Annotated[Dist, Bounds(lo=0, hi=1, msg="every draw must lie in [0, 1], got {got}")] = (
        Field(
            Dist(uniform=(0.5, 1.0)),
            description="distance of the nucleus centre from the cell centre, as a fraction of the "
            "largest one that keeps it inside (0: centred; 1: touching the margin)",
        )
    )
    lac: LAC = Field(default_factory=lambda: _measured("nucleus"))
    nucleolus: NucleolusConfig = NucleolusConfig()


class MitochondriaConfig(StrictModel):
    """Tubular, branching mitochondrial networks near the cell periphery.

    Each network is a persistent random walk over a shell of the cell interior (normalised radius in
    ``shell``), branching with ``branch_probability`` per step; the walk is swept with a tube radius.
    Tubes only replace cytoplasm (never another organelle).
    """

    enabled: bool = False
    networks: Count = Field(Dist(uniform=(3.0, 7.0)), description="networks per cell (rounded)")
    radius_vox: PositiveSize = Field(
        Dist(uniform=(4.0, 6.0)), description="tube radius, before scale"
    )
    steps: Count = Field(Dist(uniform=(8.0, 20.0)), description="segments of the main branch")
    branch_probability: float = Field(0.15, ge=0.0, le=1.0, description="per step")
    branch_steps: Count = Field(Dist(uniform=(3.0, 8.0)), description="segments of a side branch")
    step_factor: float = Field(2.0, gt=0.0, le=10.0, description="segment length / tube radius")
    turn_deg: float = Field(25.0, ge=0.0, le=180.0, description="sd of the turn per step")
    shell: tuple[float, float] = Field(
        (0.7, 0.88), description="normalised radial range of the tube axis in the cell interior"
    )
    lac: LAC = Field(default_factory=lambda: _measured("mitochondrion"))

    @field_validator("shell")
    @classmethod
    def _shell(cls, v):
        _check_range(v, "shell")
        if v[1] >= 1.0:
            raise ValueError(f"shell: values must be < 1, got {list(v)}")
        return v


class TextureConfig(StrictModel):
    """Procedural 3D fractal Perlin texture modulating cytoplasm and nucleus LAC.

    LAC = base x (1 + amplitude x noise), noise in [-1, 1] (zero mean), drawn per cell.
    """

    enabled: bool = True
    amplitude: Annotated[
        Size, Bounds(hi=1, hi_open=True, msg="must stay < 1 (LAC would go negative), got {got}")
    ] = Field(Dist(const=0.1), description="relative modulation")
    scale_vox: Annotated[PositiveSize, Bounds(lo=1, msg="must be >= 1 voxel, got {got}")] = Field(
        Dist(const=12.0), description="coarsest feature size, voxels"
    )
    octaves: int = Field(3, ge=1, le=8)
    persistence: float = Field(0.5, gt=0.0, le=1.0)


class PhantomConfig(StrictModel):
    """The whole phantom section: cells, organelles, texture."""

    scale: float = Field(1.0, gt=0.0, le=10.0, description="multiplies every object radius")
    fit_to_grid: bool = Field(
        True,
        description="if the largest possible cell would not fit the grid, shrink every length of "
        "the phantom (radii, wall, deformation, texture) by one factor so it does (recorded in "
        "meta as fit_factor; a wall never gets thinner than 1 voxel by it); if false, such a "
        "config is an error",
    )
    scale_lac_with_energy: bool = Field(
        True,
        description="rescale measured LACs (tabulated at 517 eV) by the protein LAC ratio "
        "mu(E)/mu(517 eV) (factory.materials)",
    )
    cells: CellsConfig = CellsConfig()
    vacuoles: VacuolesConfig = VacuolesConfig()
    lipid_droplets: LipidDropletsConfig = LipidDropletsConfig()
    nucleus: NucleusConfig = NucleusConfig()
    mitochondria: MitochondriaConfig = MitochondriaConfig()
    texture: TextureConfig = TextureConfig()

    # --- derived bounds (voxels) used for the fit checks and the layout ---------------------------

    def cell_bound_vox(self, fit: float = 1.0) -> float:
        """Largest distance from a cell centre to any voxel of that cell (bud and warp included)."""
        c = self.cells
        r = c.radius_vox.bounds[1] * self.scale
        if c.budding.probability > 0:
            # Bounding sphere of mother + bud, centred between them (see plan.draw_cells).
            ratio = c.budding.size_ratio.bounds[1]
            r = r + r * ratio * (1.0 - c.budding.neck.bounds[0])
        d = c.deformation
        amp = math.sqrt(3.0) * d.amplitude_vox.bounds[1] if d.enabled else 0.0
        return fit * (r + amp) + (1.0 if d.enabled else 0.0)

    def fit_factor(self, shape) -> float:
        """The factor (<= 1) applied to every length so the largest cell fits ``shape`` (Z, Y, X)."""
        room = (min(shape) - 2) / 2.0
        bound = self.cell_bound_vox()
        if bound <= room or not self.fit_to_grid:
            return 1.0
        pad = 1.0 if self.cells.deformation.enabled else 0.0
        return (room - pad) / (bound - pad)

    def check_with(self, config) -> None:
        """Cross-checks against the grid and between sections (called by SimConfig at load)."""
        s = self.scale
        shape = tuple(config.grid.shape)
        c = self.cells
        bound = self.cell_bound_vox(self.fit_factor(shape))
        if 2 * bound + 2 > min(shape) + 1e-6:
            raise ValueError(
                f"phantom.cells.radius_vox: a cell up to {2 * bound + 2:.1f} voxels across "
                f"(radius {show(c.radius_vox)} x scale {s}, bud and deformation included) cannot "
                f"fit in grid.shape {list(shape)}"
            )
        # The interior of the largest cell: an organelle whose smallest draw exceeds it never fits.
        # (The fit factor scales cells and organelles alike, so this test is made at factor 1.)
        inner_hi = c.radius_vox.bounds[1] * s - c.wall_thickness_vox.bounds[0]
        if inner_hi <= 0:
            raise ValueError(
                f"phantom.cells.wall_thickness_vox: the wall {show(c.wall_thickness_vox)} fills "
                f"the whole cell (radius {show(c.radius_vox)} x scale {s})"
            )
        checks = []
        if self.vacuoles.enabled:
            lo = self.vacuoles.radius_bounds()[0] * s
            checks.append(("vacuoles.radius_vox", lo, self.vacuoles.margin * inner_hi))
        if self.lipid_droplets.enabled:
            lo = self.lipid_droplets.radius_vox.bounds[0] * s
            checks.append(("lipid_droplets.radius_vox", lo, inner_hi))
        if self.nucleus.enabled:
            lo = self.nucleus.radius_vox.bounds[0] * s * (1 - self.nucleus.axis_jitter)
            checks.append(("nucleus.radius_vox", lo, self.nucleus.margin * inner_hi))
        if self.mitochondria.enabled:
            lo = self.mitochondria.radius_vox.bounds[0] * s
            room = (1.0 - self.mitochondria.shell[0]) * inner_hi
            checks.append(("mitochondria.radius_vox", lo, room))
        for name, need, room in checks:
            if need > room:
                section = getattr(self, name.split(".")[0])
                value = getattr(section, name.split(".")[1])
                raise ValueError(
                    f"phantom.{name}: organelles of radius >= {need:.1f} voxels (x scale {s}) "
                    f"cannot fit in cells whose interior is at most {room:.1f} voxels; "
                    f"got {show(value)} with cells.radius_vox {show(c.radius_vox)}"
                )
        # Together: the smallest draws' volumes must not exceed the largest interior's volume
        # (disjoint balls inside a ball), else the configured counts can never be placed.
        packs = []
        if self.vacuoles.enabled:
            n = max(0, round(self.vacuoles.count.bounds[0]))
            r = self.vacuoles.radius_bounds()[0] * s
            vol = n * r**3
            if self.nucleus.enabled:
                vol += (self.nucleus.radius_vox.bounds[0] * s * (1 - self.nucleus.axis_jitter)) ** 3
            packs.append(("vacuoles.count", n, vol, self.vacuoles.margin * inner_hi))
        if self.lipid_droplets.enabled:
            ld = self.lipid_droplets
            n = max(0, round(ld.count.bounds[0]))
            vol = n * (ld.radius_vox.bounds[0] * s + ld.gap_vox / 2) ** 3
            packs.append(("lipid_droplets.count", n, vol, inner_hi))
        for name, n, vol, room in packs:
            if vol > room**3:
                section = getattr(self, name.split(".")[0])
                raise ValueError(
                    f"phantom.{name}: at least {n} organelles of radius "
                    f"{(vol / max(n, 1)) ** (1 / 3):.1f} voxels (x scale {s}) cannot fit together "
                    f"in cells whose interior is at most {room:.1f} voxels; got "
                    f"{show(section.count)} with radius_vox {show(section.radius_vox)}"
                )


# --- sample mounts ----------------------------------------------------------------------------------


class FilmConfig(StrictModel):
    """A grid's support film: a flat carbon layer in the slab plane (path ``t / cos θ``).

    Holey or continuous carbon films of TEM/SXT grids are 10-50 nm thick (Quantifoil: ~12 nm;
    e.g. Groen et al., J. Cell Sci. 132 (2019) jcs221291, flat-grid cryo-SXT at the Mistral
    beamline, ALBA). LAC: amorphous carbon at ``energy_ev`` (xraylib, :mod:`factory.materials`).
    """

    enabled: bool = False
    thickness_nm: Size = Field(Dist(uniform=(10.0, 30.0)), description="film thickness, per sample")


class BarsConfig(StrictModel):
    """The bars of the grid mesh on either side of the field of view, parallel to the tilt axis.

    They lie in the slab plane, so at high tilt their projection (bar thickness x sin θ plus the
    lateral distance x cos θ) enters the detector as opaque bands. A 200-mesh copper grid has a
    125 µm pitch, ~35 µm bars (a ~90 µm hole) and is ~20 µm thick (manufacturers' data, e.g.
    Quantifoil/Gilder 200 mesh). The field of view lies ``edge_distance_um`` from the nearest bar
    (the other one is ``hole_um`` farther).
    """

    enabled: bool = False
    material: Literal["copper", "gold"] = "copper"
    hole_um: PositiveSize = Field(
        Dist(const=90.0), description="width of a mesh hole, µm, per sample"
    )
    width_um: PositiveSize = Field(Dist(const=35.0), description="bar width, µm, per sample")
    thickness_um: PositiveSize = Field(
        Dist(uniform=(15.0, 25.0)), description="bar thickness, per sample"
    )
    edge_distance_um: PositiveSize = Field(
        Dist(uniform=(3.0, 30.0)),
        description="distance from the tilt axis to the nearest bar edge, µm, per sample",
    )

    @model_validator(mode="after")
    def _inside_hole(self) -> BarsConfig:
        if self.edge_distance_um.bounds[1] > self.hole_um.bounds[0]:
            raise ValueError(
                f"edge_distance_um: must stay within the hole (<= hole_um {show(self.hole_um)}); "
                f"got {show(self.edge_distance_um)}"
            )
        return self


class GridMount(StrictModel):
    """Flat-grid tomography (today's default): the cells lie in an ice slab on a grid, whose tilt is
    limited (the missing wedge). The ice layer itself is ``acquisition.ice``; this section adds the
    optional support film and grid bars."""

    kind: Literal["grid"] = "grid"
    film: FilmConfig = FilmConfig()
    bars: BarsConfig = BarsConfig()

    def check_with(self, config) -> None:
        """A grid tilts within ±90° (the slab would be edge-on): range at most 180°."""
        tilt = config.acquisition.tilt
        if tilt.range_deg.bounds[1] > 180.0:
            raise ValueError(
                f"acquisition.tilt.range_deg: a grid mount tilts at most 180° in total; ranges up "
                f"to 360° need mount.kind: capillary; got {show(tilt.range_deg)}"
            )


class CapillaryMount(StrictModel):
    """A thin-walled glass capillary along the tilt axis Y, filled with medium, cells packed in it.

    As at the XM-2 microscope of the National Center for X-ray Tomography (ALS): cells in thin
    borosilicate capillaries of ~5-15 µm diameter, rotated about the capillary axis through a full
    rotation (Le Gros et al., Curr. Opin. Struct. Biol. 15 (2005) 593-600; McDermott et al., Trends
    Cell Biol. 19 (2009) 587-595). Glass LAC: borosilicate at ``energy_ev`` (xraylib); medium LAC:
    water ice at ``energy_ev`` plus a drawn buffer absorption. Cells (``phantom.cells``) are packed
    end to end along Y at least ``phantom.cells.gap_vox`` apart (0: touching allowed), each at a
    uniform position of the lumen's cross-section.
    """

    kind: Literal["capillary"] = "capillary"
    outer_diameter_fov: PositiveSize = Field(
        Dist(uniform=(0.8, 1.3)),
        description="outer diameter / field-of-view width (grid X), per sample; > 1: the capillary "
        "exceeds the field of view (interior tomography)",
    )
    wall_thickness_um: PositiveSize = Field(
        Dist(uniform=(0.2, 0.4)), description="glass wall thickness in µm, per sample"
    )
    medium_extra_lac_per_um: Size = Field(
        Dist(uniform=(0.0, 0.05)),
        description="absorption of the buffer added to water ice's LAC in the lumen, per sample",
    )
    axis_offset_vox: Annotated[Dist, _FINITE] = Field(
        Dist(normal=(0.0, 2.0), clamp=(-5.0, 5.0)),
        description="offset of the capillary axis from the rotation axis, drawn for Z and for X "
        "(voxels, per sample)",
    )
    spacing_vox: Size = Field(
        Dist(uniform=(0.0, 2.0)),
        description="extra clearance between neighbouring cells beyond cells.gap_vox, per cell",
    )
    wall_gap_vox: float = Field(0.0, ge=0.0, description="minimum clearance of a cell to the glass")

    def radius_bounds_vox(self, shape, voxel_nm: float) -> tuple[float, float, float]:
        """(smallest outer radius, largest wall, smallest lumen radius) a draw can give, voxels."""
        r_lo = self.outer_diameter_fov.bounds[0] * shape[2] / 2.0
        wall_hi = self.wall_thickness_um.bounds[1] * 1e3 / voxel_nm
        return r_lo, wall_hi, r_lo - wall_hi

    def check_with(self, config) -> None:
        """Cross-checks against the grid, the cells and the acquisition (called at load)."""
        shape, vnm = tuple(config.grid.shape), config.grid.voxel_nm
        r_lo, wall_hi, lumen = self.radius_bounds_vox(shape, vnm)
        if wall_hi >= r_lo:
            raise ValueError(
                f"mount.wall_thickness_um: a wall up to {self.wall_thickness_um.bounds[1]} µm "
                f"({wall_hi:.1f} voxels) is not thinner than the smallest capillary radius "
                f"({r_lo:.1f} voxels = outer_diameter_fov {self.outer_diameter_fov.bounds[0]} x "
                f"{shape[2]} / 2); got {show(self.wall_thickness_um)}"
            )
        ph = config.phantom
        bound = ph.cell_bound_vox(ph.fit_factor(shape)) + self.wall_gap_vox
        if bound > lumen:
            raise ValueError(
                f"phantom.cells.radius_vox: a cell up to {bound:.1f} voxels in radius (deformation "
                f"and wall_gap_vox included) does not fit the smallest capillary lumen ({lumen:.1f} "
                f"voxels); got {show(ph.cells.radius_vox)}"
            )
        if config.acquisition.ice.enabled:
            raise ValueError(
                "acquisition.ice: a capillary mount has no ice slab (the medium fills the lumen); "
                "got enabled: true"
            )


MountConfig = GridMount | CapillaryMount
