"""Deterministic random streams: every draw derives from (global seed, sample index, stage).

The rule (recorded in every manifest as :data:`SEED_RULE`)::

    SeedSequence(global_seed, spawn_key=(sample_index, STAGE_ID[stage]))

No random 31-bit seeds are ever drawn from another stream, so a million samples never collide, and a
stage can be re-run alone (a phantom is reproduced without running the acquisition). Torch generators
are seeded from the same sequence, so CPU draws are bit-identical across processes and executors.
"""

from __future__ import annotations

import numpy as np
import torch

# Never renumber: the ids are part of the dataset's identity.
STAGE_ID: dict[str, int] = {
    "phantom": 0,
    "acquisition": 1,
    "reconstruction": 2,
    "split": 3,
    "augment": 4,
}

SEED_RULE = (
    "numpy.random.SeedSequence(seed, spawn_key=(sample_index, stage_id)); "
    f"stage ids {STAGE_ID}; torch generators seeded with the first uint64 of that sequence"
)


def _check(seed: int, index: int, stage: str) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index: must be a non-negative integer, got {index!r}")
    if stage not in STAGE_ID:
        raise ValueError(f"stage: unknown stage {stage!r} (known: {sorted(STAGE_ID)})")


def seed_sequence(seed: int, index: int, stage: str) -> np.random.SeedSequence:
    """The seed sequence of one stage of one sample."""
    _check(seed, index, stage)
    return np.random.SeedSequence(int(seed), spawn_key=(int(index), STAGE_ID[stage]))


def stage_rng(seed: int, index: int, stage: str) -> np.random.Generator:
    """A numpy Generator (PCG64) for one stage of one sample."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, index, stage)))


def torch_generator(seed: int, index: int, stage: str, device: str | torch.device = "cpu"):
    """A torch.Generator on ``device`` for one stage of one sample, from the same seed rule.

    CPU draws are bit-identical everywhere; CUDA draws are deterministic per GPU model/driver.
    """
    state = seed_sequence(seed, index, stage).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen
