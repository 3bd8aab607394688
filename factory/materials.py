"""Linear absorption coefficients (LAC, 1/µm) of the materials the simulator places.

Two kinds of material:

* **Compounds** (``water_ice``, ``protein``, ``gold``, ``borosilicate_glass``, ``amorphous_carbon``,
  ``copper``, ...): µ is computed from the chemical formula
  and mass density at the photon energy with ``xraylib`` (``CS_Total_CP``, cm²/g, × density),
  so changing ``energy_ev`` changes the contrast coherently [1]_. xraylib agrees with the
  Henke/CXRO tables used in PHYSICS.md to within about 1 % in the water window (ice 0.110 vs 0.111
  1/µm, protein 1.32 vs 1.35 1/µm at 517 eV).
* **Measured** cellular compartments (``cytoplasm``, ``vacuole``, ``lipid_droplet``, ``nucleus``,
  ``nucleolus``, ``mitochondrion``): a Gaussian (mean ± sd) of LACs measured by cryo-SXT near
  517 eV, from the sources cited per entry. They are tabulated at their measurement energy
  (:data:`MEASURED_ENERGY_EV`); :func:`lac_distribution` rescales them to another energy by the
  ratio µ_protein(E)/µ_protein(517 eV), i.e. treating the organic part as protein-like (a
  first-order model: the organic matter, not the water, sets the contrast in the water window).

Public API: :func:`lac_compound`, :func:`lac`, :func:`lac_distribution`, :func:`lac_table`,
:data:`MATERIALS`.

References
----------
.. [1] T. Schoonjans et al., "The xraylib library for X-ray–matter interactions. Recent
   developments", Spectrochim. Acta B 66, 776-784 (2011).
.. [2] J. Egebjerg, D. Wüstner, "SimAQ: Mitigating Experimental Artifacts in Soft X-Ray Tomography
   using Simulated Acquisitions", arXiv:2508.10821 (2025) — measured yeast LACs (cytoplasm,
   vacuole, lipid droplet) used by the reference method (SIMAQ.md / PHYSICS.md).
.. [3] M. Uchida, Y. Sun, G. McDermott, C. Knoechel, M. A. Le Gros, D. Parkinson, D. G. Drubin,
   C. A. Larabell, "Quantitative analysis of yeast internal architecture using soft X-ray
   tomography", Yeast 28, 227-236 (2011) — organelle LACs of S. cerevisiae by cryo-SXT at 517 eV.
.. [4] D. Y. Parkinson, G. McDermott, L. D. Etkin, M. A. Le Gros, C. A. Larabell, "Quantitative
   3-D imaging of eukaryotic cells using soft X-ray tomography", J. Struct. Biol. 162, 380-386
   (2008) — organelle LACs (nucleus, nucleolus, mitochondria) by cryo-SXT.
.. [5] J. Dubochet et al., "Cryo-electron microscopy of vitrified specimens", Q. Rev. Biophys. 21,
   129-228 (1988) — density of vitreous ice, 0.93-0.94 g/cm³.
.. [6] Corning Inc., "PYREX® 7740 borosilicate glass" properties sheet — composition by weight
   SiO2 80.6 %, B2O3 13.0 %, Na2O 4.0 %, Al2O3 2.3 %; density 2.23 g/cm³.
.. [7] J. Robertson, "Diamond-like amorphous carbon", Mater. Sci. Eng. R 37, 129-281 (2002) —
   evaporated amorphous carbon (support films) 1.8-2.1 g/cm³; 2.0 g/cm³ used here.
.. [8] CRC Handbook of Chemistry and Physics — bulk densities of copper (8.96 g/cm³) and gold
   (19.32 g/cm³), the metals of TEM/SXT specimen grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ALIASES",
    "MATERIALS",
    "MEASURED_ENERGY_EV",
    "Material",
    "lac",
    "lac_compound",
    "lac_distribution",
    "lac_table",
]

#: Photon energy (eV) of the measured compartment LACs (cryo-SXT at 517 eV [2]_ [3]_).
MEASURED_ENERGY_EV = 517.0

#: Molar masses (g/mol) of the oxides of :data:`BOROSILICATE_OXIDES` (IUPAC standard atomic weights).
_OXIDES = {
    "SiO2": ({"Si": 1, "O": 2}, 60.084),
    "B2O3": ({"B": 2, "O": 3}, 69.620),
    "Na2O": ({"Na": 2, "O": 1}, 61.979),
    "Al2O3": ({"Al": 2, "O": 3}, 101.961),
}

#: Borosilicate glass (Pyrex 7740) by weight fraction of oxides [6]_.
BOROSILICATE_OXIDES = {"SiO2": 0.806, "B2O3": 0.130, "Na2O": 0.040, "Al2O3": 0.023}


def oxide_formula(weight_fractions: dict[str, float]) -> str:
    """A chemical formula (atoms per 100 g, 4 decimals) of a glass given by oxide weight fractions.

    xraylib parses fractional subscripts, and the mass attenuation of a mixture is the
    mass-fraction-weighted sum of its elements', so this formula gives the glass's µ/ρ exactly
    (to the rounding of the subscripts). The fractions are normalised to sum to 1.
    """
    total = sum(weight_fractions.values())
    atoms: dict[str, float] = {}
    for oxide, w in weight_fractions.items():
        elements, molar = _OXIDES[oxide]
        moles = 100.0 * w / total / molar
        for el, k in elements.items():
            atoms[el] = atoms.get(el, 0.0) + k * moles
    return "".join(f"{el}{n:.4f}" for el, n in atoms.items())


@dataclass(frozen=True)
class Material:
    """One material: either a compound (``formula``, ``density_g_cm3``) or a measured LAC.

    For a measured material ``mean``/``sd`` are LACs in 1/µm at :data:`MEASURED_ENERGY_EV`; for
    a compound ``rel_sd`` is the relative spread used by :func:`lac_distribution` (0 = exact).
    """

    name: str
    source: str
    formula: str | None = None
    density_g_cm3: float | None = None
    mean: float | None = None
    sd: float | None = None
    rel_sd: float = 0.0

    @property
    def kind(self) -> str:
        return "compound" if self.formula is not None else "measured"


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        # --- compounds: µ from formula and density with xraylib [1] ---
        Material(
            "water_ice",
            "H2O, vitreous ice 0.93 g/cm³ [Dubochet et al. 1988]; µ by xraylib",
            formula="H2O",
            density_g_cm3=0.93,
        ),
        Material(
            "protein",
            "average protein C94H139N24O31S at 1.35 g/cm³ (PHYSICS.md); µ by xraylib",
            formula="C94H139N24O31S",
            density_g_cm3=1.35,
        ),
        Material(
            "gold",
            "Au at 19.32 g/cm³ (bulk gold, CRC Handbook); µ by xraylib",
            formula="Au",
            density_g_cm3=19.32,
        ),
        # --- sample mounts: capillary glass, a grid's support film and bars ---
        Material(
            "borosilicate_glass",
            "borosilicate glass (Pyrex 7740: SiO2 80.6 %, B2O3 13.0 %, Na2O 4.0 %, Al2O3 2.3 % by "
            "weight) at 2.23 g/cm³ [Corning 7740 data sheet]; µ by xraylib",
            formula=oxide_formula(BOROSILICATE_OXIDES),
            density_g_cm3=2.23,
        ),
        Material(
            "amorphous_carbon",
            "C, evaporated amorphous carbon support film at 2.0 g/cm³ [Robertson, Mater. Sci. "
            "Eng. R 37 (2002) 129]; µ by xraylib",
            formula="C",
            density_g_cm3=2.0,
        ),
        Material(
            "copper",
            "Cu at 8.96 g/cm³ (bulk copper, CRC Handbook; grid bars); µ by xraylib",
            formula="Cu",
            density_g_cm3=8.96,
        ),
        # --- measured yeast compartments (Gaussian mean ± sd, 1/µm near 517 eV) ---
        Material(
            "cytoplasm",
            "measured, Egebjerg & Wüstner, arXiv:2508.10821 (SimAQ), 0.346 ± 0.027",
            mean=0.346,
            sd=0.027,
        ),
        Material(
            "vacuole",
            "measured, Egebjerg & Wüstner, arXiv:2508.10821 (SimAQ), 0.182 ± 0.039",
            mean=0.182,
            sd=0.039,
        ),
        Material(
            "lipid_droplet",
            "measured, Egebjerg & Wüstner, arXiv:2508.10821 (SimAQ), 0.570 ± 0.111",
            mean=0.570,
            sd=0.111,
        ),
        # Nucleus: less absorbing than cytoplasm in yeast SXT (Uchida et al., Yeast 28 (2011)
        # 227-236; Parkinson et al., J. Struct. Biol. 162 (2008) 380-386). Rounded literature
        # values; the per-class distributions are configurable in the phantom section.
        Material(
            "nucleus",
            "literature, Uchida et al., Yeast 28 (2011) 227-236; Parkinson et al., JSB 162 "
            "(2008) 380-386: nucleoplasm ~0.24 ± 0.03",
            mean=0.24,
            sd=0.03,
        ),
        Material(
            "nucleolus",
            "literature, Parkinson et al., JSB 162 (2008) 380-386; Uchida et al., Yeast 28 "
            "(2011) 227-236: nucleolus denser than nucleoplasm, ~0.32 ± 0.03",
            mean=0.32,
            sd=0.03,
        ),
        Material(
            "mitochondrion",
            "literature, Uchida et al., Yeast 28 (2011) 227-236; Parkinson et al., JSB 162 "
            "(2008) 380-386: mitochondria ~0.40 ± 0.05",
            mean=0.40,
            sd=0.05,
        ),
        # The reference gives the cell wall the lipid-droplet LAC (SIMAQ.md phantom table).
        Material(
            "cell_wall",
            "as lipid droplet, following the SimAQ reference (SIMAQ.md), 0.570 ± 0.111",
            mean=0.570,
            sd=0.111,
        ),
    )
}


def _check_energy(energy_ev) -> float:
    try:
        e = float(energy_ev)
    except (TypeError, ValueError):
        raise ValueError(f"energy_ev: must be a number, got {energy_ev!r}") from None
    if not (math.isfinite(e) and 30.0 <= e <= 300_000.0):
        raise ValueError(
            f"energy_ev: must be in [30, 300000] eV (xraylib range), got {energy_ev!r}"
        )
    return e


@lru_cache(maxsize=1024)
def lac_compound(formula: str, density_g_cm3: float, energy_ev: float) -> float:
    """LAC of a compound in 1/µm: ``xraylib.CS_Total_CP(formula, E/1000) * density * 1e-4``.

    Parameters
    ----------
    formula : str
        Chemical formula xraylib parses (``"H2O"``, ``"C94H139N24O31S"``, ``"Au"``).
    density_g_cm3 : float
        Mass density in g/cm³ (> 0).
    energy_ev : float
        Photon energy in eV.

    Returns
    -------
    float
        µ in 1/µm (total attenuation: photoabsorption + coherent + incoherent scattering).
    """
    import xraylib

    e = _check_energy(energy_ev)
    if not (isinstance(density_g_cm3, (int, float)) and math.isfinite(density_g_cm3)):
        raise ValueError(f"density_g_cm3: must be a finite number, got {density_g_cm3!r}")
    if density_g_cm3 <= 0:
        raise ValueError(f"density_g_cm3: must be > 0, got {density_g_cm3!r}")
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(f"formula: must be a non-empty chemical formula, got {formula!r}")
    try:
        mass_att = xraylib.CS_Total_CP(formula, e / 1000.0)  # cm²/g
    except ValueError as err:
        raise ValueError(f"formula: xraylib cannot parse {formula!r} ({err})") from None
    return float(mass_att * density_g_cm3 * 1e-4)  # 1/cm → 1/µm


#: Other accepted names.
ALIASES: dict[str, str] = {
    "ice": "water_ice",
    "au": "gold",
    "mitochondria": "mitochondrion",
    "glass": "borosilicate_glass",
    "carbon": "amorphous_carbon",
    "cu": "copper",
}


def _material(name: str) -> Material:
    try:
        return MATERIALS[ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(
            f"material: unknown material {name!r} (known: {sorted(MATERIALS)})"
        ) from None


def lac_distribution(name: str, energy_ev: float = MEASURED_ENERGY_EV) -> tuple[float, float]:
    """(mean, sd) of the LAC of material ``name`` at ``energy_ev``, in 1/µm.

    Compounds: computed with xraylib (sd = ``rel_sd`` × mean). Measured compartments: the
    tabulated Gaussian, scaled by µ_protein(E) / µ_protein(517 eV) away from 517 eV.
    """
    m = _material(name)
    e = _check_energy(energy_ev)
    if m.kind == "compound":
        mu = lac_compound(m.formula, m.density_g_cm3, e)
        return mu, mu * m.rel_sd
    prot = MATERIALS["protein"]
    ratio = lac_compound(prot.formula, prot.density_g_cm3, e) / lac_compound(
        prot.formula, prot.density_g_cm3, MEASURED_ENERGY_EV
    )
    return m.mean * ratio, m.sd * ratio


def lac(name: str, energy_ev: float = MEASURED_ENERGY_EV) -> float:
    """Mean LAC (1/µm) of material ``name`` (a key of :data:`MATERIALS` or :data:`ALIASES`)."""
    return lac_distribution(name, energy_ev)[0]


def lac_table(energy_ev: float = MEASURED_ENERGY_EV) -> dict[str, dict]:
    """Every named material at ``energy_ev``: ``{name: {mean, sd, kind, source}}`` (JSON-safe)."""
    out = {}
    for name, m in MATERIALS.items():
        mean, sd = lac_distribution(name, energy_ev)
        out[name] = {"mean": mean, "sd": sd, "kind": m.kind, "source": m.source}
        if m.kind == "compound":
            out[name].update(formula=m.formula, density_g_cm3=m.density_g_cm3)
    return out
