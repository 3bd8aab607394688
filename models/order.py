"""The training stream's global sample order and each rank's position in it (exact resume).

An *epoch* of the stream is one pass over the ``n`` training samples in the order
:func:`epoch_order` draws from ``(seed, epoch)``: a permutation of *sample indices* (0 … n−1 in
manifest order), not of shard listings, so it does not depend on how many workers read it. The
order is cut into *blocks* of ``block_size`` consecutive samples; a block is what one rank holds in
memory at a time and draws its slice stacks from (in an order drawn from ``(seed, epoch, block)``).
Blocks are dealt round robin: block ``b`` of an epoch goes to rank ``b mod world``.

A rank's *position* is ``(k, offset)``: the index ``k`` of the item it is consuming in its own
sequence of items and how many stacks of that item's block it has consumed. :class:`StreamState`
(JSON, in every checkpoint) holds all ranks' positions; with it a resumed run continues with the
exact next stack on every rank. Resuming on another number of ranks (:meth:`StreamState.replan`)
gathers every block not yet finished (partial ones with their offset) into an explicit *carry*
list, dealt round robin first, then continues the round robin after the furthest block any rank
had started: each stack of each sample is still consumed exactly once per epoch.

Everything here is arithmetic on indices: no I/O, no torch, no Ray.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from factory.errors import UserError

# stream ids of the seed rule (factory.rng style): (seed, STREAM, ...) → one numpy Generator
ORDER, MIX, STACKS, CROP, REAL, AUGMENT = 101, 102, 103, 104, 105, 106


def rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    """The random stream of ``(seed, stream, *key)``; independent of anything drawn before."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, *key)))


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """Permutation (n,) int64 of the sample indices for ``epoch`` (read-only; drawn once per
    epoch, not once per block: at 10⁶ samples a draw takes tens of milliseconds)."""
    order = rng(seed, ORDER, epoch).permutation(n)
    order.flags.writeable = False
    return order


def block_size_for(n: int, mix_volumes: int, world: int) -> int:
    """Samples per block: ``mix_volumes``, smaller if needed so every rank gets a block."""
    if n < world:
        raise UserError(
            f"workers: {world} workers need at least {world} training samples, the split has {n}"
        )
    return max(1, min(mix_volumes, n // world))


@dataclass(frozen=True)
class Item:
    """One block to consume: ``(epoch, block)``, from stack ``start`` of its drawn order."""

    epoch: int
    block: int
    start: int = 0


@dataclass
class StreamState:
    """Where every rank stands in the global order (see the module docstring).

    Attributes
    ----------
    n, block_size, seed : int
        Training samples, samples per block and the run's seed (fixed for the run).
    world : int
        Ranks the positions belong to.
    epoch, start_block : int
        The round robin continues at block ``start_block`` of ``epoch`` (0, 0 for a new run).
    carry : list of [epoch, block, start]
        Blocks dealt round robin before that (after a resume on another number of ranks).
    positions : list of [k, offset]
        Per rank: index into its item sequence and stacks consumed of that item's block.
    """

    n: int
    block_size: int
    seed: int
    world: int
    epoch: int = 0
    start_block: int = 0
    carry: list = field(default_factory=list)
    positions: list = field(default_factory=list)

    @classmethod
    def new(cls, n: int, block_size: int, seed: int, world: int) -> StreamState:
        s = cls(n=n, block_size=block_size, seed=seed, world=world)
        s.positions = [[0, s.item(r, 0).start] for r in range(world)]
        return s

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / self.block_size)

    def block_samples(self, epoch: int, block: int) -> np.ndarray:
        """Sample indices of ``block`` of ``epoch``."""
        b = self.block_size
        return epoch_order(self.seed, epoch, self.n)[block * b : (block + 1) * b]

    def item(self, rank: int, k: int) -> Item:
        """The ``k``-th item of ``rank``'s sequence: its carry share, then the round robin."""
        mine = self.carry[rank :: self.world]
        if k < len(mine):
            return Item(*mine[k])
        m = k - len(mine)
        nb, w = self.n_blocks, self.world
        first = len(range(self.start_block + rank, nb, w))
        if m < first:
            return Item(self.epoch, self.start_block + rank + m * w)
        m -= first
        per_epoch = len(range(rank, nb, w))
        if per_epoch == 0:
            raise UserError(f"workers: {w} ranks but only {nb} blocks of samples")
        return Item(self.epoch + 1 + m // per_epoch, rank + (m % per_epoch) * w)

    def to_json(self) -> dict:
        return {
            "n": self.n, "block_size": self.block_size, "seed": self.seed, "world": self.world,
            "epoch": self.epoch, "start_block": self.start_block,
            "carry": [list(c) for c in self.carry], "positions": [list(p) for p in self.positions],
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> StreamState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    def replan(self, world: int) -> StreamState:
        """The same consumption continued on ``world`` ranks (unchanged if ``world`` is the same)."""
        if world == self.world:
            return self
        if world > self.n_blocks:
            raise UserError(
                f"workers: cannot resume on {world} ranks, the run's stream has {self.n_blocks} "
                f"blocks of {self.block_size} samples (mix_volumes when it started); use at most "
                f"{self.n_blocks} workers"
            )
        started = [
            (it.epoch, it.block)
            for r, (k, _) in enumerate(self.positions)
            if k >= len(self.carry[r :: self.world])
            for it in [self.item(r, k)]
        ]
        if started:
            frontier = max(started)
            nxt = (frontier[0], frontier[1] + 1)
            if nxt[1] == self.n_blocks:
                nxt = (nxt[0] + 1, 0)
        else:
            frontier, nxt = (self.epoch, self.start_block - 1), (self.epoch, self.start_block)
        left = []
        for r, (k, off) in enumerate(self.positions):
            it, first = self.item(r, k), True
            while len(self.carry[r :: self.world]) > k or (it.epoch, it.block) <= frontier:
                left.append([it.epoch, it.block, off if first else it.start])
                k, first = k + 1, False
                it = self.item(r, k)
        left.sort()
        s = StreamState(self.n, self.block_size, self.seed, world, nxt[0], nxt[1], left)
        s.positions = [[0, s.item(r, 0).start] for r in range(world)]
        return s
