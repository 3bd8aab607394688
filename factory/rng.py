"""Deterministic random streams: every draw derives from (global seed, sample index, stage).

The rule (recorded in every manifest as :data:`SEED_RULE`)::

    SeedSequence(global_seed, spawn_key=(sample_index, STAGE_ID[stage]))

No random 31-bit seeds are ever drawn from another stream, so a million samples never collide, and a
stage can be re-run alone (a phantom is reproduced without running the acquisition). Torch generators
are seeded from the same sequence, so CPU draws are bit-identical across processes and executors.

Sub-streams
-----------
Within a stage, each part draws from its own *sub-stream*: the stage's sequence with a key appended
to its spawn key (:func:`child_sequence`), a numpy PCG64 on it (:func:`child_rng`) or a torch
generator seeded with its second uint64 (:func:`child_torch_generator`). Switching one part on or
off, or changing how much it draws, never shifts another part's stream (what a part places may
still depend on what another placed: a phantom's vacuoles avoid its nucleus).

* acquisition: key ``(effect_id,)``, one per row of
  :data:`factory.acquisition.simulate.CHAIN` (ids there);
* phantom (dataset format 2 on): key ``(PHANTOM_STREAM_ID[name], cell_index)``, ``cell_index`` 0
  for the streams of the whole phantom (mount, cell count, texture parameters, layout), the cell's
  index for the streams of one cell (its shape, each organelle kind, its deformation and texture
  fields); see :class:`PhantomStreams`.
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

# Never renumber or reuse an id: the ids are part of the dataset's identity (format 2 on).
# Sub-streams of the phantom stage, key (id, cell_index); "whole" streams use cell_index 0.
PHANTOM_STREAM_ID: dict[str, int] = {
    "mount": 0,  # whole: a capillary's diameter, wall, medium LAC, axis offset
    "cell_count": 1,  # whole: how many cells
    "texture": 2,  # whole: the texture parameters (amplitude, scale)
    "layout": 3,  # whole: the two xy jitters, then the placement of the cells
    "cell": 4,  # per cell: size, wall, pose, LACs, deformation amplitude and scale, bud, z jitter
    "nucleus": 5,  # per cell: nucleus and nucleolus
    "vacuoles": 6,  # per cell: vacuoles, their fragmentation (and droplets made of fragments)
    "lipid_droplets": 7,  # per cell: lipid droplets
    "mitochondria": 8,  # per cell: mitochondrial networks
    "deformation_field": 9,  # per cell, torch: the deformation noise fields
    "texture_field": 10,  # per cell, torch: the texture noise field
}
#: The phantom streams drawn once per cell (the others are drawn once per phantom, cell_index 0).
PHANTOM_CELL_STREAMS = frozenset(
    {
        "cell",
        "nucleus",
        "vacuoles",
        "lipid_droplets",
        "mitochondria",
        "deformation_field",
        "texture_field",
    }
)

SEED_RULE = (
    "numpy.random.SeedSequence(seed, spawn_key=(sample_index, stage_id)); "
    f"stage ids {STAGE_ID}; torch generators seeded with the first uint64 of that sequence; "
    "sub-streams: SeedSequence(seed, spawn_key=(sample_index, stage_id) + key), numpy PCG64 on it, "
    "torch generators seeded with its second uint64 (masked to 63 bits); acquisition key "
    "(effect_id,) (ids in the acquisition meta's substream_rule); phantom key (stream_id, "
    "cell_index), cell_index 0 for the streams of the whole phantom, phantom stream ids "
    f"{PHANTOM_STREAM_ID}"
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


def _torch_from_word(word, device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(word) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


def torch_generator(seed: int, index: int, stage: str, device: str | torch.device = "cpu"):
    """A torch.Generator on ``device`` for one stage of one sample, from the same seed rule.

    CPU draws are bit-identical everywhere; CUDA draws are deterministic per GPU model/driver.
    """
    state = seed_sequence(seed, index, stage).generate_state(1, dtype=np.uint64)[0]
    return _torch_from_word(state, device)


def child_sequence(parent: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """The sub-stream ``key`` of ``parent``: ``parent``'s spawn key with ``key`` appended."""
    return np.random.SeedSequence(
        parent.entropy, spawn_key=tuple(parent.spawn_key) + tuple(int(k) for k in key)
    )


def child_rng(parent: np.random.SeedSequence, *key: int) -> np.random.Generator:
    """A numpy Generator (PCG64) on the sub-stream ``key`` of ``parent``."""
    return np.random.Generator(np.random.PCG64(child_sequence(parent, *key)))


def child_torch_generator(
    parent: np.random.SeedSequence, *key: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch.Generator on ``device`` for the sub-stream ``key`` of ``parent``, seeded with the
    second uint64 of its sequence (so it differs from the numpy stream's seed)."""
    return _torch_from_word(
        child_sequence(parent, *key).generate_state(2, dtype=np.uint64)[1], device
    )


class PhantomStreams:
    """The sub-streams of one sample's phantom (:data:`PHANTOM_STREAM_ID`).

    ``rng(name)`` / ``torch(name)`` for a stream of the whole phantom, ``rng(name, cell)`` /
    ``torch(name, cell)`` for a stream of one cell. Each call makes a fresh generator at the start of
    its stream; a part asks once and keeps it.
    """

    def __init__(self, seed: int, index: int, device: str | torch.device = "cpu"):
        self._ss = seed_sequence(seed, index, "phantom")
        self._device = device

    def _key(self, name: str, cell: int | None) -> tuple[int, int]:
        if name not in PHANTOM_STREAM_ID:
            raise ValueError(
                f"unknown phantom stream {name!r} (known: {sorted(PHANTOM_STREAM_ID)})"
            )
        per_cell = name in PHANTOM_CELL_STREAMS
        if per_cell != (cell is not None):
            need = "a cell index" if per_cell else "no cell index"
            raise ValueError(f"phantom stream {name!r} takes {need}, got cell={cell!r}")
        if cell is not None and (not isinstance(cell, (int, np.integer)) or cell < 0):
            raise ValueError(f"cell: must be a non-negative integer, got {cell!r}")
        return PHANTOM_STREAM_ID[name], 0 if cell is None else int(cell)

    def rng(self, name: str, cell: int | None = None) -> np.random.Generator:
        """A numpy Generator on the phantom stream ``name`` (of cell ``cell``)."""
        return child_rng(self._ss, *self._key(name, cell))

    def torch(self, name: str, cell: int | None = None) -> torch.Generator:
        """A torch.Generator (on the phantom's device) on the stream ``name`` (of cell ``cell``)."""
        return child_torch_generator(self._ss, *self._key(name, cell), device=self._device)
