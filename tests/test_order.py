"""models.order: the global sample order, rank positions, and replanning on another world size."""

import numpy as np
import pytest

from factory.errors import UserError
from models.order import StreamState, block_size_for, epoch_order


def _stacks(state: StreamState, epoch: int, block: int) -> int:
    """A stand-in for the stacks a block yields: depends only on (epoch, block), as in training."""
    return 3 + (epoch * 7 + block * 5) % 4


def _consume(state: StreamState, rank: int, count: int, log: list) -> None:
    """Consume ``count`` stacks on ``rank``, advancing its position as the stream does."""
    k, off = state.positions[rank]
    for _ in range(count):
        it = state.item(rank, k)
        while off >= _stacks(state, it.epoch, it.block):
            k += 1
            it = state.item(rank, k)
            off = it.start
        log.append((it.epoch, it.block, off))
        off += 1
    state.positions[rank] = [k, off]


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a, b = epoch_order(0, 3, 50), epoch_order(0, 3, 50)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, epoch_order(0, 4, 50))
    assert not np.array_equal(a, epoch_order(1, 3, 50))


def test_blocks_are_dealt_round_robin_and_cover_each_epoch():
    s = StreamState.new(n=10, block_size=3, seed=0, world=2)
    assert s.n_blocks == 4
    items = [[s.item(r, k) for k in range(4)] for r in range(2)]
    assert [(i.epoch, i.block) for i in items[0]] == [(0, 0), (0, 2), (1, 0), (1, 2)]
    assert [(i.epoch, i.block) for i in items[1]] == [(0, 1), (0, 3), (1, 1), (1, 3)]
    got = np.concatenate([s.block_samples(0, b) for b in range(4)])
    assert np.array_equal(np.sort(got), np.arange(10))


@pytest.mark.parametrize("seed", range(12))
def test_replan_consumes_every_stack_exactly_once(seed):
    """Random consumption, random changes of world size: per epoch, each stack once."""
    r = np.random.default_rng(seed)
    s = StreamState.new(n=int(r.integers(8, 30)), block_size=int(r.integers(1, 5)), seed=seed,
                        world=int(r.integers(1, 4)))  # fmt: skip
    log: list = []
    for _ in range(6):
        for rank in range(s.world):
            _consume(s, rank, int(r.integers(0, 25)), log)
        s = StreamState.from_json(s.to_json())  # what a checkpoint keeps
        s = s.replan(int(r.integers(1, min(5, s.n_blocks) + 1)))
    top = max((e for e, _, _ in log), default=0)
    s = s.replan(1)  # drain what is left on one rank: nothing lost, nothing twice
    _consume(s, 0, sum(_stacks(s, e, b) for e in range(top + 1) for b in range(s.n_blocks)), log)
    assert len(log) == len(set(log)), "a stack consumed twice"
    want = {(e, b, i) for e in range(top + 1) for b in range(s.n_blocks)
            for i in range(_stacks(s, e, b))}  # fmt: skip
    assert want <= set(log), "a stack never consumed"


def test_same_world_replan_keeps_positions():
    s = StreamState.new(n=12, block_size=2, seed=1, world=3)
    _consume(s, 1, 7, [])
    assert s.replan(3) is s


def test_too_many_workers_for_the_samples_is_a_clear_error():
    with pytest.raises(UserError, match="workers: 4 workers need at least 4 training samples"):
        block_size_for(3, 4, 4)
    assert block_size_for(10, 4, 3) == 3
    s = StreamState.new(n=4, block_size=2, seed=0, world=1)
    with pytest.raises(
        UserError, match="cannot resume on 3 ranks, the run's stream has 2 blocks of 2 samples"
    ):
        s.replan(3)
