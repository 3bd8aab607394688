"""One sample's whole life, top to bottom: phantom → acquisition → reconstruction → fields + metadata.

This is a plain function of (config, global seed, sample index): it knows nothing of Ray or of shards.
The executors in :mod:`factory.dataset` call it and write what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from factory.rng import SEED_RULE
from schemas import label_scheme
from schemas.sample import SampleMeta


@dataclass
class Sample:
    """The paired arrays of one sample and everything drawn to make it.

    ``fields`` maps a field name to a numpy array: ``phantom`` (Z, Y, X) float32 LAC in 1/µm,
    ``labels`` (Z, Y, X) uint8 in the config's label scheme, ``sinogram`` (n_angles, Y, det) float32,
    ``recon`` (Z, Y, X) float32, optionally ``noisy`` (Z, Y, X) float32 (the volume before projection).
    ``meta`` is the record written as ``meta.json``: seed, index, every drawn parameter, the
    objects placed (:class:`schemas.sample.SampleMeta`).
    """

    index: int
    fields: dict[str, np.ndarray]
    meta: SampleMeta


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def simulate_sample(config, seed: int, index: int, *, device: str | torch.device = "cpu") -> Sample:
    """Simulate sample ``index`` of the dataset defined by (``config``, ``seed``)."""
    from factory.acquisition import reconstruct, simulate_acquisition
    from factory.phantom import generate_phantom

    phantom = generate_phantom(config, seed, index=index, device=device)
    acquisition = simulate_acquisition(config, phantom, seed, index=index, device=device)
    recon, recon_meta = reconstruct(config, acquisition)

    scheme = label_scheme(config.labels.scheme)
    fields = {
        "phantom": _np(phantom.lac).astype(np.float32, copy=False),
        "labels": scheme.apply(_np(phantom.labels)),
        "sinogram": _np(acquisition.sinogram).astype(np.float32, copy=False),
        "recon": _np(recon).astype(np.float32, copy=False),
    }
    if acquisition.noisy_volume is not None:
        fields["noisy"] = _np(acquisition.noisy_volume).astype(np.float32, copy=False)
    meta = SampleMeta.build({
        "index": int(index),
        "seed": int(seed),
        "seed_rule": SEED_RULE,
        "config_sha256": config.sha256,
        "grid": {"shape": list(config.grid.shape), "voxel_nm": config.grid.voxel_nm},
        "label_scheme": scheme.name,
        "phantom": phantom.meta,
        "objects": phantom.objects,
        "acquisition": acquisition.meta,
        "reconstruction": recon_meta,
    })  # fmt: skip
    return Sample(index=int(index), fields=fields, meta=meta)
