"""Executors: who runs :class:`~factory.dataset.shards.ShardBuilder` on which shards.

* ``local``: one builder in this process, shards in order (debugging; the reference for bytes).
* ``ray``: a pool of Ray actors, one builder each (``num_gpus`` per actor when the cluster has GPUs,
  else a CPU share sized so that the pool never asks for more than the cluster has, fractional if
  need be, so a 2-core machine does not hang). The driver keeps at most ``max_in_flight`` shard
  tasks queued per actor (backpressure: a worker holds one sample at a time, so memory is bounded by
  the worker count, not the dataset size). A task is one whole shard, written by the actor straight
  to the destination (local disk or S3), so no volume travels through the object store or the
  driver. Actors restart and their task is retried after a system failure (a killed process or
  node); the shard is then written again from scratch under a new temporary name, with the same
  bytes. An actor last seen on a node that died takes no new shard until a probe reaches it
  again (restarted elsewhere), and its shards not yet started are cancelled and go back to the
  queue, so the survivors build them instead of waiting for the restart (a new worker process
  and builder: a minute on a loaded machine). When the cluster can no longer hold the whole pool,
  the actors of the dead node are retired and their shards go back to the queue for the others
  (a restarting actor that cannot be placed would otherwise hold its shards forever). The
  progress reporter is polled without waiting, so its own restart never stalls the shards.

Both executors pin torch's intra-op thread count to ``dataset.torch_threads`` so they compute the
same bytes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from factory.dataset.shards import ShardBuilder, ShardSpec
from factory.dataset.storage import Store, as_store
from factory.errors import UserError

ProgressFn = Callable[[str, int], None]  # (shard name, samples done in that shard)
RecordFn = Callable[[dict], None]


class ShardFailed(RuntimeError):
    """A shard could not be built; ``shard`` names it, the message gives the cause."""

    def __init__(self, shard: str, cause: str, user_error: UserError | None = None):
        super().__init__(f"shard {shard}: {cause}")
        self.shard = shard
        self.user_error = user_error  # the worker's own UserError (bad input), if that was it


def run_local(
    config,
    seed: int,
    out: str | Store,
    specs: list[ShardSpec],
    *,
    device: str = "cpu",
    on_progress: ProgressFn | None = None,
    on_record: RecordFn | None = None,
) -> list[dict]:
    """Build ``specs`` one after the other in this process.

    Returns the shards' slim records; with ``on_record`` each is handed to it instead and the list
    returned is empty (a driver folds them in as they come, and holds nothing per shard).
    """
    import torch

    threads = torch.get_num_threads()
    try:
        builder = ShardBuilder(config.to_json(), seed, out, device=device)
        records = []
        for spec in specs:
            rec = builder.build(spec, on_progress)
            if on_record is not None:
                on_record(rec)
            else:
                records.append(rec)
        return records
    finally:
        torch.set_num_threads(threads)


class _ShardActor:
    """The body of a Ray actor: one :class:`ShardBuilder` for the actor's lifetime."""

    def __init__(self, config_json: dict, seed: int, out: Store, device: str):
        self.builder = ShardBuilder(config_json, seed, out, device=device)

    def ready(self) -> str:
        """The id of the node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def build(self, spec: dict, progress) -> tuple[dict, str]:
        """Build one shard; returns its record and the id of the node that built it."""

        def report(name: str, done: int) -> None:
            progress.update.remote(name, done)  # fire and forget

        return self.builder.build(ShardSpec(**spec), report), self.ready()


class ProgressActor:
    """A tiny actor collecting ``(name, units done)`` from workers for the driver's progress bar
    (shards of ``generate``, the training steps of ``train``)."""

    def __init__(self):
        self.done: dict[str, int] = {}

    def update(self, name: str, done: int) -> None:
        self.done[name] = max(done, self.done.get(name, 0))

    def take(self) -> dict[str, int]:
        """The updates since the last call (so a poll costs O(shards in flight), not O(shards))."""
        out, self.done = self.done, {}
        return out


def sample_memory_bytes(config) -> int:
    """Memory one actor declares to Ray: 512 MiB of runtime plus 6 volumes of the grid in float32.

    ``python bench/memory.py`` measures a ``simaq-paper`` 512³ sample's peak at 5.1 volumes over the
    imports; Ray then never places more actors on a node than its memory holds.
    """
    return 512 * 2**20 + 6 * 4 * math.prod(int(n) for n in config.grid.shape)


def ray_pool_shape(
    resources: dict,
    threads: int,
    workers: int | None,
    gpus_per_worker: float | None,
    memory_per_worker: int = 0,
) -> tuple[int, float, float]:
    """``(workers, num_cpus, num_gpus)`` per actor for a cluster's total ``resources``.

    Without ``workers``, the pool fills the cluster's GPUs, else its CPUs (``threads`` each), and
    never holds more actors than the cluster's memory fits (``memory_per_worker`` bytes each).
    """
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if gpus_per_worker < 0:
        raise UserError(f"must be >= 0, got {gpus_per_worker}", param="gpus_per_worker")
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        raise UserError(
            f"{gpus_per_worker} GPU(s) per worker, the cluster has {gpus:g}",
            param="gpus_per_worker",
        )
    memory = float(resources.get("memory", 0.0))
    if workers is None:
        if gpus_per_worker > 0:
            workers = max(1, int(gpus // gpus_per_worker))
        else:
            workers = max(1, int(cpus // threads))
        if memory_per_worker > 0 and memory > 0:
            workers = max(1, min(workers, int(memory // memory_per_worker)))
    if workers < 1:
        raise UserError(f"must be >= 1, got {workers}", param="workers")
    if memory_per_worker > 0 and 0 < memory < workers * memory_per_worker:
        raise UserError(
            f"{workers} workers need {workers * memory_per_worker / 2**30:.1f} GiB "
            f"({memory_per_worker / 2**30:.2f} GiB each), the cluster has {memory / 2**30:.1f} GiB",
            param="workers",
        )
    if cpus <= 0:
        raise UserError("the Ray cluster has no CPU resources", param="address")
    share = cpus / workers
    num_cpus = min(1.0 if gpus_per_worker > 0 else float(threads), share)
    num_cpus = float(int(num_cpus * 1000) / 1000)  # Ray wants at most 4 decimals
    return workers, num_cpus, float(gpus_per_worker)


def run_ray(
    config,
    seed: int,
    out: str | Store,
    specs: list[ShardSpec],
    *,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    max_in_flight: int = 2,
    max_retries: int = 3,
    on_progress: ProgressFn | None = None,
    on_record: RecordFn | None = None,
    on_start: Callable[[int, float, float], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> list[dict]:
    """Build ``specs`` on a pool of Ray actors of the connected cluster (see module docstring).

    On a shard failure no new shard is started and those queued on an actor are cancelled; those
    running finish (and are committed), then :class:`ShardFailed` is raised for the first failure.
    ``on_ready`` is called once every actor has been constructed (benchmarks time the steady
    state from there).

    Returns the shards' slim records; with ``on_record`` each is handed to it instead and the list
    returned is empty. ``on_progress`` hears of shards in flight only (at most once more per
    shard, when it is done), so what the driver keeps does not grow with the shard count.
    """
    import ray

    memory = sample_memory_bytes(config)
    n_workers, num_cpus, num_gpus = ray_pool_shape(
        ray.cluster_resources(), config.dataset.torch_threads, workers, gpus_per_worker, memory
    )
    n_workers = min(n_workers, max(1, len(specs)))
    if on_start is not None:
        on_start(n_workers, num_cpus, num_gpus)
    if not specs:
        return []
    device = "cuda" if num_gpus > 0 else "cpu"
    actor_cls = ray.remote(_ShardActor).options(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        memory=memory,
        max_restarts=max_retries,
        max_task_retries=max_retries,
    )
    # the progress actor may live on a node that dies: it restarts (empty); the driver polls it
    # without waiting (one poll in flight) and skips a failed poll, so losing it, or waiting for
    # its restart, never stalls the shards
    progress = ray.remote(ProgressActor).options(num_cpus=0, max_restarts=-1).remote()
    cfg = config.to_json()
    out = as_store(out)  # resolved here: the actors get the same absolute URL and endpoint
    actors = [actor_cls.remote(cfg, seed, out, device) for _ in range(n_workers)]
    pool = _ActorPool(ray, actors, progress, specs, (num_cpus, num_gpus), max_in_flight)
    records: list[dict] = []
    try:
        pool.run(on_progress, on_record or records.append, on_ready)
    finally:
        for actor in actors:
            ray.kill(actor)
        ray.kill(progress)
    if pool.failure is not None:
        raise pool.failure
    return records


class _ActorPool:
    """Shards dealt to a fixed pool of shard actors, ``max_in_flight`` each, as they free up.

    Ray restarts a dead actor and retries its task (``max_restarts``, ``max_task_retries``); what
    is this class's own is the loss of a *node*: an actor last seen on a dead node gets no new
    shard until a probe (its ``ready``) says it runs again, its shards not yet started are
    cancelled and requeued, and when the cluster no longer holds the whole pool the surplus
    actors are retired and their shards requeued to the others.
    """

    def __init__(self, ray, actors: list, progress, specs, shape, max_in_flight: int):
        self.ray, self.actors, self.progress = ray, actors, progress
        self.shape, self.max_in_flight = shape, max_in_flight
        n = len(actors)
        self.pending = deque(specs)
        self.inflight: dict = {}  # build ref -> (actor index, spec)
        self.load, self.alive = [0] * n, [True] * n
        self.nodes: list[str | None] = [None] * n  # where each actor last ran
        self.probes: dict = {}  # ready ref of a probe -> actor index
        self.cancelled: set = set()  # build refs cancelled on a lost actor (requeued later)
        self.ready_refs = [a.ready.remote() for a in actors]  # runs before any build
        self.ready_of = dict(zip(self.ready_refs, range(n), strict=True))
        self.failure: ShardFailed | None = None
        self.seen: dict[str, int] = {}  # samples reported per shard in flight

    def run(self, on_progress: ProgressFn | None, on_record: RecordFn, on_ready) -> None:
        """Until every shard is built (or, after a failure, every shard in flight is done)."""
        take = self.progress.take.remote() if on_progress is not None else None
        checked = time.monotonic()
        while self.pending or self.inflight:
            self._fill()
            if not self.inflight and not self.probes:
                if self.pending:  # cannot happen: a live actor is never left without a probe
                    raise ShardFailed(self.pending[0].name, "no Ray worker is left to build it")
                break
            ready, _ = self.ray.wait([*self.inflight, *self.probes], num_returns=1, timeout=0.2)
            self._note_ready(on_ready)
            if time.monotonic() - checked > 2.0:
                checked = time.monotonic()
                self._check_nodes()
            if take is not None:
                take = self._poll_progress(take, on_progress)
            for ref in ready:
                self._settle(ref, on_progress, on_record)

    def _fill(self) -> None:
        if self.failure is not None:
            self.pending.clear()
            return
        for a, actor in enumerate(self.actors):
            while (
                self.alive[a]
                and a not in self.probes.values()
                and self.pending
                and self.load[a] < self.max_in_flight
            ):
                spec = self.pending.popleft()
                self.inflight[actor.build.remote(spec.to_json(), self.progress)] = (a, spec)
                self.load[a] += 1

    def _note_ready(self, on_ready) -> None:
        if not self.ready_refs:
            return
        done, self.ready_refs = self.ray.wait(
            self.ready_refs, num_returns=len(self.ready_refs), timeout=0
        )
        for ref in done:
            try:
                self.nodes[self.ready_of[ref]] = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                pass  # its build tasks report the failure
        if not self.ready_refs and on_ready is not None:
            on_ready()

    def _check_nodes(self) -> None:
        ray = self.ray
        dead = _dead_nodes(ray)
        if self.failure is None:
            for a in range(len(self.actors)):
                if self.alive[a] and self.nodes[a] in dead and a not in self.probes.values():
                    self.probes[self.actors[a].ready.remote()] = a
                    for ref, (b, _spec) in self.inflight.items():
                        if b == a and ref not in self.cancelled:
                            ray.cancel(ref)  # a shard already running finishes normally
                            self.cancelled.add(ref)
        for a in _actors_to_retire(ray, self.alive, self.nodes, *self.shape, dead):
            ray.kill(self.actors[a], no_restart=True)  # its tasks fail and are requeued
            self.alive[a] = False

    def _poll_progress(self, take, on_progress: ProgressFn):
        """Never block on the reporter: it may be restarting elsewhere."""
        took, _ = self.ray.wait([take], timeout=0)
        if not took:
            return take
        try:
            updates = self.ray.get(took[0])
        except self.ray.exceptions.RayError:  # lost with its node: skip this poll
            updates = {}
        running = {spec.name for _, spec in self.inflight.values()}
        for name, done in updates.items():
            if name in running and done > self.seen.get(name, 0):
                self.seen[name] = done
                on_progress(name, done)
        return self.progress.take.remote()

    def _cancel_queued(self) -> None:
        """After a failure: builds still queued on an actor are cancelled (running ones finish
        and commit). A lost store would otherwise make each queued shard simulate its samples
        and then retry every request against it before failing too."""
        for ref in self.inflight:
            if ref not in self.cancelled:
                self.ray.cancel(ref)
                self.cancelled.add(ref)

    def _settle(self, ref, on_progress: ProgressFn | None, on_record: RecordFn) -> None:
        """A probe or a build finished: requeue, record the failure, or hand the record on."""
        ray = self.ray
        if ref in self.probes:
            a = self.probes.pop(ref)
            try:
                self.nodes[a] = ray.get(ref)  # restarted (elsewhere): it takes shards again
            except ray.exceptions.RayError:
                pass  # retired, or out of restarts: its build tasks say which
            return
        a, spec = self.inflight.pop(ref)
        self.load[a] -= 1
        try:
            rec, self.nodes[a] = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - any worker failure stops the run
            if ref in self.cancelled and isinstance(err, ray.exceptions.TaskCancelledError):
                self.cancelled.discard(ref)
                self.pending.appendleft(spec)  # never started on the lost actor
            elif isinstance(err, ray.exceptions.RayActorError) and not self.alive[a]:
                self.pending.appendleft(spec)  # retired on purpose: a live actor builds it
            elif self.failure is None:
                self.failure = _failure(spec, err)
                self._cancel_queued()
            return
        if on_progress is not None and self.seen.pop(spec.name, 0) < spec.nsamples:
            on_progress(spec.name, spec.nsamples)
        self.cancelled.discard(ref)
        on_record(rec)


def _failure(spec: ShardSpec, err: BaseException) -> ShardFailed:
    """The :class:`ShardFailed` of a build task's error (a user error keeps its last line)."""
    cause = getattr(err, "cause", None) or err
    user = cause if isinstance(cause, UserError) else None
    text = str(cause).strip().splitlines()
    msg = text[-1] if user is not None and text else f"{type(cause).__name__}: {cause}"
    return ShardFailed(spec.name, msg, user)


def _dead_nodes(ray) -> set[str]:
    """Ids of the cluster's nodes the GCS knows to be dead."""
    return {n["NodeID"] for n in ray.nodes() if not n.get("Alive", True)}


def _actors_to_retire(
    ray, alive: list[bool], nodes: list, num_cpus: float, num_gpus: float, dead: set[str]
):
    """Indices of live actors to give up when the cluster's capacity (whole actors of
    ``num_cpus`` CPUs / ``num_gpus`` GPUs) falls short of the live pool: first those last seen on
    a dead node, then those never seen running (their node is unknown)."""
    res = ray.cluster_resources()
    if num_gpus > 0:
        capacity = int(res.get("GPU", 0.0) / num_gpus + 1e-9)
    else:
        capacity = int(res.get("CPU", 0.0) / num_cpus + 1e-9) if num_cpus > 0 else sum(alive)
    surplus = sum(alive) - max(capacity, 1)
    if surplus <= 0:
        return []
    on_dead = [a for a, ok in enumerate(alive) if ok and nodes[a] in dead]
    unknown = [a for a, ok in enumerate(alive) if ok and nodes[a] is None]
    return (on_dead + unknown)[:surplus]
