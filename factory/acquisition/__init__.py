"""Simulated acquisition and reconstruction of cryo soft X-ray tomography (the SimAQ stages).

``simulate_acquisition(config, phantom, seed, *, index=0, device="cpu") -> Acquisition`` turns a
phantom into a tilt series with the microscope's artifacts, a chain of effects (:data:`CHAIN`,
:mod:`.simulate`);
``reconstruct(config, acquisition) -> (recon, meta)`` reconstructs it from the nominal geometry
(:mod:`.recon`). Arrays: volumes (Z, Y, X) with Y the tilt axis, sinograms (n_angles, Y, det).

Names are imported lazily so that loading the config models (and ``simaq --help``) stays free of
torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "AcquisitionConfig": "factory.acquisition.config",
    "ReconstructionConfig": "factory.acquisition.config",
    "quantile_normalize": "factory.acquisition.recon",
    "reconstruct": "factory.acquisition.recon",
    "EFFECT_ID": "factory.acquisition.simulate",
    "CHAIN": "factory.acquisition.simulate",
    "Effect": "factory.acquisition.simulate",
    "Acquisition": "factory.acquisition.simulate",
    "AcquisitionState": "factory.acquisition.simulate",
    "simulate_acquisition": "factory.acquisition.simulate",
    "TiltScheme": "factory.acquisition.tilt",
    "draw_tilt_scheme": "factory.acquisition.tilt",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'factory.acquisition' has no attribute {name!r}")
