"""Streaming training with Ray Train: ``train(config, data_url, run_dir)``.

A :class:`ray.train.torch.TorchTrainer` starts ``config.workers`` workers. They stream the
manifest's ``train`` samples (never a directory listing; local or ``s3://``) in one global order
(:mod:`models.order`: a permutation of sample indices per epoch, cut into blocks dealt round robin
to the ranks; :class:`models.data.StackStream` reads each sample by seeking to it), train the
network of :mod:`models.unet` with the focal + Dice loss on augmented slice stacks, and after
every epoch (``steps_per_epoch`` optimiser steps per worker, the same on every rank so DDP never
waits) measure per-class IoU on ``val_slices`` evenly spaced slices of the ``val`` split (default
64, shared between the ranks; confusion matrices summed over ranks): a bounded cost per epoch,
the curve's signal; the full per-slice evaluation is ``simaq evaluate``.

Rank 0 reports a checkpoint with ``ray.train.report`` into ``RUN_DIR/ray/checkpoint_SSSSSSSS``
(``S`` = the step) at every epoch's end and every ``checkpoint_every`` steps: model, optimiser,
step, history, the stream's position (:class:`models.order.StreamState`: every rank's place in
the global order, gathered from the ranks) and the epoch's partial sums; at an epoch's end it
also rewrites ``RUN_DIR/metrics.csv`` and ``RUN_DIR/curve.png``.

Running again with the same ``RUN_DIR`` resumes from the last checkpoint (Ray Train restores its
checkpoint list from the run directory; ``ray.train.get_checkpoint()`` hands it to the workers)
with the exact next stack on every rank: every draw of the stream and of the augmentation derives
from ``(seed, position)`` or ``(seed, rank, step)``, never from what was drawn before, so with
the same number of workers on CPU the weights equal an uninterrupted run's bit for bit. On
another number of workers the stream is dealt anew (:meth:`StreamState.replan`): each stack is
still seen once per epoch. A run directory belongs to one dataset and one architecture: a
different one is refused.

Failures are Ray Train's: ``FailureConfig(max_failures)`` restarts a failed worker group (a worker
died or raised) from the last checkpoint the same way, and the driver prints a warning line for
each restart (:func:`_failure_notice`). A data or input error (:class:`UserError`, a bad shard's
``DatasetError`` among them) is no failure, as retrying it would fail again: the ranks agree on it
at the next step (:func:`_agree`), stop together, and the driver raises it after ``fit()``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from factory.errors import UserError
from schemas.dataset import FieldSpec, Manifest, RootedShard, ShardRecord

if TYPE_CHECKING:
    from factory.dataset.storage import Store

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "curve.png"
RAY_NAME = "ray"


# --- run directory files --------------------------------------------------------------------------


def _write_file(store: Store, name: str, data: bytes) -> None:
    path = store.join(name)
    if store.is_local:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.part"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    else:
        with store.fs.open_output_stream(path) as fh:
            fh.write(data)


def metrics_csv(history: list[dict]) -> bytes:
    """The metrics history as CSV bytes (one row per epoch; columns: union of the keys)."""
    cols: list[str] = []
    for row in history:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue().encode()


def curve_png(history: list[dict], class_names: list[str]) -> bytes:
    """Training loss and per-class validation IoU against the epoch (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [h["loss"] for h in history], "o-", label="train")
    a.set_xlabel("epoch")
    a.set_ylabel("focal + Dice loss")
    a.set_yscale("log")
    a.legend()
    for name in class_names:
        key = f"val_iou_{name}"
        ys = [h.get(key, float("nan")) for h in history]
        if any(y == y for y in ys):
            b.plot(ep, ys, "o-", label=name)
    b.set_xlabel("epoch")
    b.set_ylabel("validation IoU")
    b.set_ylim(0, 1)
    if b.lines:
        b.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# --- the job --------------------------------------------------------------------------------------


@dataclass
class TrainJob:
    """Everything a Ray Train worker needs, planned by the driver (:func:`plan_job`).

    Attributes
    ----------
    cfg : TrainConfig
        The run's training parameters.
    data : Store
        The dataset root (local or ``s3://``, absolute, with its endpoint); a mixture's shards
        carry their own ``root`` (:class:`~schemas.dataset.RootedShard`), read with this store's
        endpoint.
    fields : dict of str to FieldSpec
        The manifest's field descriptions (dtype and shape bounds checked on read).
    train_shards, val_shards : list of ShardRecord
        Shard records of the ``train`` and ``val`` splits.
    steps_per_epoch, total_steps : int
        Optimiser steps per worker and epoch, and in the whole run (the lr schedule's length).
    ckpt_meta : dict
        What every checkpoint's ``state.json`` records besides epoch, step and history.
    real : tuple of ndarray, optional
        A real tomogram and its sparse labels (normalised; −1 unannotated) for few-shot mixing.
    threads : int
        Torch threads per worker: the CPUs Ray gives it, no more.
    """

    cfg: Any
    data: Store
    fields: dict[str, FieldSpec]
    class_names: list[str]
    train_shards: list[ShardRecord]
    val_shards: list[ShardRecord]
    steps_per_epoch: int
    total_steps: int
    run_dir: Store
    ckpt_meta: dict
    init_weights: dict | None = None
    real: tuple | None = None
    threads: int = 1
    # audit and test hooks, read from the driver's environment (workers may start elsewhere)
    trace_dir: str | None = field(default_factory=lambda: os.environ.get("SIMAQ_STREAM_TRACE"))
    kill: str | None = field(default_factory=lambda: os.environ.get("SIMAQ_TEST_KILL"))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --- the per-worker loop --------------------------------------------------------------------------


def val_plan(
    shards: list[ShardRecord], rank: int, world: int, budget: int | None
) -> tuple[list, int]:
    """This rank's validation shards and the slice quota per volume (None: every slice).

    The ``budget`` slices per epoch (all ranks together) are shared evenly between the val
    volumes (sample counts from the manifest), so validation costs the same bounded time every
    epoch whatever the size of the val split or the number of ranks.
    """
    mine = shards[rank::world]
    if budget is None:
        return mine, None
    nvol = sum(s.nsamples for s in shards)
    if budget == 0 or nvol == 0:
        return [], 0
    return mine, max(1, math.ceil(budget / nvol))


def _val_confusion(model, job: TrainJob, rank: int, world: int, device, on_bad=None) -> np.ndarray:
    """Confusion matrix of this rank's validation slices (see :func:`val_plan`): per volume, a
    fixed set of evenly spaced slices along the axis, the same every epoch."""
    from models.data import iter_volumes, label_slice
    from models.evaluate import confusion_matrix
    from models.infer import predict_slices

    cfg, ncls = job.cfg, job.num_classes
    cm = np.zeros((ncls, ncls), np.int64)
    shards, quota = val_plan(job.val_shards, rank, world, cfg.val_slices)
    for recon, lab, _ in iter_volumes(
        job.data,
        shards,
        fields=job.fields,
        num_classes=ncls,
        allow_bad_shards=cfg.allow_bad_shards,
        on_bad=on_bad,
    ):
        n = recon.shape[cfg.axis]
        k = n if quota is None else min(n, quota)
        # evenly spaced centres, away from the mirrored ends where possible
        centres = np.unique(np.round(np.linspace(0, n - 1, k + 2)[1:-1]).astype(int))
        if k >= n:
            centres = np.arange(n)
        pred = predict_slices(
            model, recon, centres, axis=cfg.axis, window=cfg.window,
            batch_size=cfg.batch_size * 2, device=device, amp=cfg.amp,
        )  # fmt: skip
        target = np.stack([label_slice(lab, int(c), cfg.axis) for c in centres])
        cm += confusion_matrix(pred, target, ncls)
    return cm


@dataclass
class _Worker:
    """One rank's live training state (model, optimiser, data stream, position)."""

    job: TrainJob
    rank: int
    world: int
    device: Any
    net: Any  # the bare network (checkpoints, validation)
    model: Any  # the DDP-wrapped one (training)
    opt: Any
    scaler: Any
    loss_fn: Any
    stream: Any
    batches: Any
    bar: Any  # the driver's progress actor (rank 0 only)
    state: Any = None  # models.order.StreamState: the global order and every rank's position
    position: list = field(default_factory=list)  # this rank's, after the last consumed batch
    step: int = 0
    history: list = field(default_factory=list)
    partial: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, steps, stacks
    trace: Any = None  # file of consumed stacks ($SIMAQ_STREAM_TRACE), for audits

    @property
    def done(self) -> bool:
        return self.step >= self.job.total_steps

    @property
    def use_amp(self) -> bool:
        return self.job.cfg.amp and self.device.type == "cuda"


def _restore(job: TrainJob, net) -> tuple[dict | None, dict]:
    """Load the last checkpoint Ray Train hands this worker (or ``--init`` weights) into ``net``;
    ``(optimiser state, state.json)`` to continue from (``{}`` for a new run)."""
    import ray.train
    import torch

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        if job.init_weights is not None:
            net.load_state_dict(job.init_weights)
        return None, {}
    opt_state = None
    with ckpt.as_directory() as d:
        net.load_state_dict(torch.load(os.path.join(d, "model.pt"), weights_only=True))
        opt_path = os.path.join(d, "optimizer.pt")
        if os.path.exists(opt_path):
            opt_state = torch.load(opt_path, weights_only=True)
        with open(os.path.join(d, "state.json"), encoding="utf-8") as fh:
            st = json.load(fh)
    return opt_state, st


def _stream_state(job: TrainJob, saved: dict, n: int, world: int):
    """The run's :class:`~models.order.StreamState`: the checkpoint's, dealt to ``world`` ranks, or
    a new one."""
    from models.order import StreamState, block_size_for

    cfg = job.cfg
    if "stream" not in saved:
        return StreamState.new(n, block_size_for(n, cfg.mix_volumes, world), cfg.seed, world)
    state = StreamState.from_json(saved["stream"])
    if state.seed != cfg.seed or state.n != n:
        raise UserError(
            f"the run's checkpoint streams {state.n} samples with seed {state.seed}; "
            f"cannot resume it with {n} samples and seed {cfg.seed} (use another `out`)",
            param="out",
        )
    return state.replan(world)


def _setup(job: TrainJob, rank: int, world: int) -> dict:
    """This rank's network (restored), stream state and stack stream: everything of a worker's
    start that reads the data or the checkpoint and may fail on it (a :class:`UserError`), and
    no collective, so a failing rank cannot leave the others waiting (:func:`_agree` follows)."""
    import torch

    from models.data import SampleSource, StackStream
    from models.unet import build_model

    cfg = job.cfg
    torch.manual_seed(cfg.seed)
    net = build_model(
        cfg.model, job.num_classes, window=cfg.window, features=cfg.features, depth=cfg.depth
    )
    opt_state, saved = _restore(job, net)
    source = SampleSource(
        job.data, job.train_shards, fields=job.fields,
        num_classes=job.num_classes, allow_bad_shards=cfg.allow_bad_shards,
    )  # fmt: skip
    state = _stream_state(job, saved, source.n, world)
    stream = StackStream(source, cfg, state, rank, real=job.real)
    return {"net": net, "opt_state": opt_state, "saved": saved, "state": state, "stream": stream}


def _start_worker(job: TrainJob, parts: dict, rank: int, world: int, device, bar) -> _Worker:
    """Wrap this rank's network for DDP (a collective), build its optimiser and start its
    batches (:func:`_setup` made the rest)."""
    import ray.train.torch
    import torch

    from models.data import Prefetcher
    from models.losses import FocalDiceLoss
    from models.unet import param_groups

    cfg, net, saved, state = job.cfg, parts["net"], parts["saved"], parts["state"]
    model = ray.train.torch.prepare_model(net)
    opt = torch.optim.Adam(param_groups(net, cfg.weight_decay), lr=cfg.lr)
    if parts["opt_state"] is not None:
        opt.load_state_dict(parts["opt_state"])
    stream = parts["stream"]
    step = int(saved.get("step", 0))
    w = _Worker(
        job, rank, world, device, net, model, opt,
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda"),
        loss_fn=FocalDiceLoss(cfg.focal_alpha, cfg.focal_gamma, cfg.dice_weight),
        stream=stream, batches=Prefetcher(stream.batches(step), depth=cfg.prefetch),
        bar=bar if rank == 0 else None, state=state, position=list(state.positions[rank]),
        step=step, history=list(saved.get("history", [])),
        partial=list(saved.get("partial", [0.0, 0.0, 0.0])) if rank == 0 else [0.0, 0.0, 0.0],
        trace=_open_trace(job.trace_dir, rank, world),
    )  # fmt: skip
    if w.bar is not None:
        w.bar.update.remote("train", step)
    return w


# --- data errors: a coordinated stop, not a failure -----------------------------------------------
#
# Ray Train retries every error a worker raises (FailureConfig.max_failures), which is right for a
# worker that died and wrong for a bad shard: it fails the same way on every attempt. So a rank
# that meets a data or input error (a UserError, DatasetError included) does not raise it: at the
# next point where every rank checks in (before each step's forward pass, after validation, after
# the start), the ranks agree on the first such error (:func:`_agree`, one all-reduce of a flag),
# stop together and return normally; rank 0 returns the message (``Result.return_value``) and the
# driver raises it as a UserError after ``fit()``.

_MSG_BYTES = 4096  # a data error's message as broadcast between the ranks (UTF-8, truncated)


_SEP = "\x1f"  # between a UserError's parameter and its message in a packed error


def _pack(err: UserError) -> str:
    """A data error as text for :func:`_agree`'s broadcast: its parameter (if any) and message."""
    return f"{err.param}{_SEP}{err.message}" if err.param else err.message


def _unpack(text: str) -> UserError:
    """The :class:`UserError` of :func:`_pack`'s text."""
    param, sep, message = text.partition(_SEP)
    return UserError(message, param=param) if sep else UserError(text)


class _DataStop(Exception):
    """Raised on every rank once the ranks agreed that one of them met a data error."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _agree(message: str | None, rank: int, world: int, device) -> None:
    """Raise :class:`_DataStop` on every rank if any rank passes a data error ``message`` (that of
    the lowest such rank); a collective every rank calls at the same point (one all-reduce of a
    flag, a broadcast of the message only when there is one)."""
    import torch
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        flag = torch.tensor([world if message is None else rank], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        src = int(flag.item())
        if src == world:
            return
        buf = torch.zeros(_MSG_BYTES, dtype=torch.uint8)
        if rank == src:
            raw = message.encode()[:_MSG_BYTES]
            buf[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        buf = buf.to(device)
        dist.broadcast(buf, src=src)
        message = bytes(buf.cpu().numpy()).rstrip(b"\0").decode(errors="replace")
    if message is not None:
        raise _DataStop(message)


def _fault(spec: str | None, point: str, step: int) -> None:
    """Fault injection for the resume tests: ``$SIMAQ_TEST_KILL=DIR;POINT:STEP[,POINT:STEP…]``
    (in the driver's environment) SIGKILLs rank 0's process at each ``POINT`` of step ``STEP``
    once (a file ``DIR/POINT-STEP`` marks it done): ``step`` after an optimiser step, ``write``
    in the middle of writing a checkpoint, ``report`` right after it was reported."""
    if not spec:
        return
    where, _, points = spec.rpartition(";")
    if f"{point}:{step}" not in points.split(","):
        return
    marker = os.path.join(where, f"{point}-{step}")
    if not os.path.exists(marker):
        import signal

        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(f"{point}:{step}\n")
        os.kill(os.getpid(), signal.SIGKILL)


def _open_trace(d: str | None, rank: int, world: int):
    """With ``$SIMAQ_STREAM_TRACE`` (a local directory, in the driver's environment), a file each
    rank appends the stacks it consumes to (``step epoch sample centre``): an audit of the
    stream, off by default."""
    if not d:
        return None
    os.makedirs(d, exist_ok=True)
    return open(os.path.join(d, f"rank{rank}-of{world}.tsv"), "a", encoding="utf-8")  # noqa: SIM115


def _train_step(w: _Worker) -> None:
    """One optimiser step on the next batch; the position and the epoch's sums move on."""
    import torch

    from models.config import learning_rate

    cfg, job = w.job.cfg, w.job
    try:
        batch, message = next(w.batches), None
    except UserError as err:  # a bad shard, no usable stack: every rank stops (see _agree)
        batch, message = None, _pack(err)
    _agree(message, w.rank, w.world, w.device)
    x, y, where = batch
    w.model.train()  # validation leaves it in eval mode
    x, y = x.to(w.device, non_blocking=True), y.to(w.device, non_blocking=True)
    with torch.autocast(w.device.type, enabled=w.use_amp):
        logits = w.model(x)
    loss = w.loss_fn(logits.float(), y)
    for group in w.opt.param_groups:
        group["lr"] = learning_rate(cfg, w.step, job.total_steps)
    w.opt.zero_grad(set_to_none=True)
    w.scaler.scale(loss).backward()
    w.scaler.step(w.opt)
    w.scaler.update()
    w.step += 1
    w.position = where["position"]
    w.partial = [w.partial[0] + float(loss.detach()), w.partial[1] + 1, w.partial[2] + x.shape[0]]
    if w.trace is not None:
        src = w.stream.source
        w.trace.writelines(f"{w.step}\t{e}\t{src.key(i)}\t{c}\n" for e, i, c in where["stacks"])
        w.trace.flush()
    if w.bar is not None:
        w.bar.update.remote("train", w.step)  # fire and forget
    if w.rank == 0:
        _fault(w.job.kill, "step", w.step)


def _epoch_metrics(w: _Worker, epoch: int, train_s: float) -> dict:
    """Validate, sum over the ranks, and return the epoch's metrics row."""
    import torch
    import torch.distributed as dist

    from models.evaluate import scores_from_confusion

    t0 = time.perf_counter()
    stats = torch.tensor(w.partial, dtype=torch.float64)
    try:
        confusion = _val_confusion(
            w.net, w.job, w.rank, w.world, w.device, on_bad=w.stream.note_bad_shard
        )
        message = None
    except UserError as err:  # a bad val shard: every rank stops (see _agree)
        confusion, message = None, _pack(err)
    _agree(message, w.rank, w.world, w.device)
    cm = torch.from_numpy(confusion)
    val_s = time.perf_counter() - t0
    if w.world > 1 and dist.is_initialized():
        dist.all_reduce(stats)
        dist.all_reduce(cm)
    iou, _ = scores_from_confusion(cm.numpy())
    fg = [v for k, v in enumerate(iou) if k > 0 and np.isfinite(v)]
    return {
        "epoch": epoch,
        "step": w.step,
        "loss": float(stats[0] / max(stats[1], 1)),
        "stacks_per_s": float(stats[2]) / max(train_s, 1e-9),
        "val_mean_iou": float(np.mean(fg)) if fg else float("nan"),
        **{f"val_iou_{n}": float(iou[k]) for k, n in enumerate(w.job.class_names)},
        "val_pixels": int(cm.sum()),
        "train_s": round(train_s, 3),
        "val_s": round(val_s, 3),
        "bad_shards": len(w.stream.bad_shards),
    }


def _gather_positions(w: _Worker) -> tuple[list, list]:
    """Every rank's stream position and the epoch's sums over the ranks (a collective)."""
    import torch
    import torch.distributed as dist

    pos = torch.tensor(w.position, dtype=torch.int64)
    partial = torch.tensor(w.partial, dtype=torch.float64)
    if w.world == 1 or not dist.is_initialized():
        return [w.position], w.partial
    every = [torch.zeros_like(pos) for _ in range(w.world)]
    dist.all_gather(every, pos)
    dist.all_reduce(partial)
    return [p.tolist() for p in every], partial.tolist()


def _report(w: _Worker, metrics: dict) -> None:
    """Report to Ray Train; rank 0 with a checkpoint (model, optimiser, stream position) and, at
    an epoch's end, metrics.csv and curve.png. Every rank calls it at the same steps."""
    import ray.train

    from models.infer import save_checkpoint

    positions, partial = _gather_positions(w)
    if w.rank != 0:
        ray.train.report(metrics)
        return
    w.state.positions = positions
    epoch_end = "epoch" in metrics
    with tempfile.TemporaryDirectory() as tmp:
        state = {
            **w.job.ckpt_meta,
            "epoch": len(w.history),
            "step": w.step,
            "history": w.history,
            "stream": w.state.to_json(),
            "partial": [0.0, 0.0, 0.0] if epoch_end else partial,
            "bad_shards": w.stream.bad_shards,
        }
        save_checkpoint(tmp, w.net, w.opt, state, fault=lambda: _fault(w.job.kill, "write", w.step))
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_{w.step:08d}",
        )
    _fault(w.job.kill, "report", w.step)
    if epoch_end:
        _write_run_outputs(w.job, w.history)


def train_loop(config: dict) -> dict | None:
    """Ray Train worker entry point (``train_loop_per_worker``): ``config`` holds the
    :class:`TrainJob` (``job``) and the driver's progress actor (``progress``).

    Steps until ``total_steps``; at each epoch's end (every ``steps_per_epoch`` steps, and the
    last step) it validates and checkpoints, and every ``checkpoint_every`` steps in between it
    checkpoints only. A data error on any rank stops every rank (see :func:`_agree`): rank 0
    returns ``{"error": message}`` (``Result.return_value``), else None.
    """
    import ray.train
    import ray.train.torch
    import torch

    job: TrainJob = config["job"]
    torch.set_num_threads(job.threads)  # the CPUs Ray gave this worker, no more
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    w = None
    try:
        try:
            parts, message = _setup(job, rank, world), None
        except UserError as err:  # e.g. a checkpoint of another seed: every rank stops
            parts, message = None, _pack(err)
        _agree(message, rank, world, device)
        w = _start_worker(job, parts, rank, world, device, config.get("progress"))
        _train(w)
    except _DataStop as stop:
        return {"error": stop.message} if rank == 0 else None
    finally:
        if w is not None:
            w.batches.close()
            if w.trace is not None:
                w.trace.close()
    return None


def _train(w: _Worker) -> None:
    """The steps, validations and checkpoints of one rank from its position to the end."""
    job = w.job
    spe, every = job.steps_per_epoch, job.cfg.checkpoint_every
    t0 = time.perf_counter()
    while not w.done:
        _train_step(w)
        if w.step % spe == 0 or w.done:
            metrics = _epoch_metrics(w, math.ceil(w.step / spe), time.perf_counter() - t0)
            w.history.append(metrics)
            w.partial = [0.0, 0.0, 0.0]
            _report(w, metrics)
            t0 = time.perf_counter()
        elif every is not None and w.step % every == 0:
            _report(w, {"step": w.step})


def _write_run_outputs(job: TrainJob, history: list[dict]) -> None:
    _write_file(job.run_dir, METRICS_FILE, metrics_csv(history))
    _write_file(job.run_dir, CURVE_FILE, curve_png(history, job.class_names))


# --- the driver -----------------------------------------------------------------------------------

_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
_CLEANER_NOISE = "Failed to query Ray Train Controller actor state"


class _DropCleanerPolling(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CLEANER_NOISE)


def ray_worker_setup() -> None:
    """Ray ``worker_process_setup_hook`` of the jobs :func:`train` starts (see below).

    Ray Train 2.60 starts a detached ``PlacementGroupCleaner`` that asks the Ray State API once a
    second whether the Train controller is alive. Two things make that noisy here:

    * the State API is served by the dashboard, which a minimal ``ray`` install (and
      ``include_dashboard=False``) does not run, so every poll logs "Failed to query Ray Train
      Controller actor state" (the code of Ray PR 65447); the cleaner only matters when a
      controller dies without cleaning up on a long-lived cluster, and a local in-process Ray
      is torn down with the driver. Only that one message is filtered; every other warning of
      the cleaner and of Ray still shows.
    * with several local Ray instances on one machine, the State API client guesses the
      cluster ("Found multiple active Ray instances ... connecting to latest cluster"), maybe
      another user's. ``RAY_ADDRESS`` (unless already set) pins it to this worker's own cluster.
    """
    import ray

    if not os.environ.get("RAY_ADDRESS"):
        try:
            os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        except Exception:  # noqa: BLE001 - best effort; only address guessing is affected
            pass
    logging.getLogger(_CLEANER_LOGGER).addFilter(_DropCleanerPolling())


@dataclass(frozen=True)
class TrainingData:
    """What training reads of its data: one dataset's manifest, or a mixture of several.

    A mixture's ``shards`` are :class:`~schemas.dataset.RootedShard` records (each names its
    dataset's root); ``mixture`` lists the members (url, name, content_sha256), None for one
    dataset. ``normalization`` is how the recon fields were normalised (what inference repeats).
    """

    name: str
    version: str
    labels: dict
    config: dict
    fields: dict[str, FieldSpec]
    shards: list[ShardRecord]
    splits: list[str]
    content_sha256: str
    normalization: dict
    mixture: list[dict] | None = None

    @classmethod
    def of(cls, m: Manifest) -> TrainingData:
        """The training view of one dataset."""
        return cls(
            name=m.name, version=m.version, labels=m.labels, config=m.config, fields=m.fields,
            shards=list(m.shards), splits=list(m.splits), content_sha256=m.content_sha256,
            normalization=_normalization(m),
        )  # fmt: skip


def read_datasets(urls: list[str | Store]) -> TrainingData:
    """What training reads of one dataset, or of a mixture of several trained on together.

    A mixture's datasets must share the label table, the voxel size, the reconstruction's
    normalisation method and the dtypes of ``recon``/``labels``; its shards are those of every dataset
    (each shard record carries its dataset's root as ``root``), so stacks are drawn from each in
    proportion to its samples. Its ``content_sha256`` is the SHA-256 of the members' in order.
    """
    from factory.dataset.manifest import dataset_store, read_manifest
    from models.infer import check_same_labels

    stores = [dataset_store(u) for u in urls]
    urls = [st.url for st in stores]
    ms = [read_manifest(st) for st in stores]
    if len(ms) == 1:
        return TrainingData.of(ms[0])
    first, base, fields = ms[0], _mixture_key(ms[0]), ms[0].fields
    for url, m in zip(urls[1:], ms[1:], strict=True):
        check_same_labels(first.labels, m.labels, f"`data` {url}")
        key = _mixture_key(m)
        for name, want in base.items():
            if key[name] != want:
                raise UserError(
                    f"{url} has {name} {key[name]!r}, the first dataset {want!r}; "
                    "a mixture needs the same (generate it with `set` to match)",
                    param="data",
                )
        fields = _merge_fields(fields, m.fields, url)
    shas = [m.content_sha256 for m in ms]
    norm = _normalization(first)  # the widest field-of-view inset of the members, for inference
    norm["fov_inset_px"] = max(_normalization(m)["fov_inset_px"] for m in ms)
    return TrainingData(
        name="+".join(m.name for m in ms),
        version=first.version,
        labels=first.labels,
        config=first.config,
        fields=fields,
        shards=[RootedShard.of(s, u) for u, m in zip(urls, ms, strict=True) for s in m.shards],
        splits=sorted({k for m in ms for k in m.splits}),
        content_sha256=hashlib.sha256(",".join(shas).encode()).hexdigest(),
        normalization=norm,
        mixture=[
            {"url": u, "name": m.name, "content_sha256": m.content_sha256}
            for u, m in zip(urls, ms, strict=True)
        ],
    )


def _mixture_key(m: Manifest) -> dict:
    """What datasets trained on together must share (besides the label table)."""
    grid = m.config.get("grid") or {}
    key = {"voxel size (nm)": grid.get("voxel_nm"), "normalisation": _normalization(m)["method"]}
    for name in ("recon", "labels"):
        spec = m.fields.get(name)
        key[f"{name} dtype"] = spec.dtype if spec is not None else None
    return key


def _merge_fields(
    a: dict[str, FieldSpec], b: dict[str, FieldSpec], url: str
) -> dict[str, FieldSpec]:
    """Field descriptions covering the arrays of two datasets (shape bounds widened)."""
    out = dict(a)
    for k, spec in b.items():
        cur = out.get(k)
        if cur is None:
            out[k] = spec
            continue
        if cur.dtype != spec.dtype:
            raise UserError(
                f"{url} stores {k} as {spec.dtype}, the first dataset as "
                f"{cur.dtype}; a mixture needs the same (set dataset.dtypes)",
                param="data",
            )
        update: dict = {}
        if cur.shape != spec.shape:
            update["shape"] = None
        for bound, pick in (("shape_min", min), ("shape_max", max)):
            x, y = getattr(cur, bound), getattr(spec, bound)
            if x and y and len(x) == len(y):
                update[bound] = [pick(i, j) for i, j in zip(x, y, strict=True)]
            else:
                update[bound] = None
        out[k] = cur.model_copy(update=update)
    return out


def _normalization(manifest: Manifest) -> dict:
    """How a dataset's recon fields were normalised (from its config's reconstruction)."""
    rc = manifest.config.get("reconstruction") or {}
    return {
        "method": rc.get("normalize", "quantile"),
        "fov_inset_px": rc.get("fov_inset_px", 5),
        "fov": "cylinder",
    }


def _open_run_dir(run_dir: Store, cfg, m: TrainingData, log) -> bool:
    """Check ``run_dir`` against this run (same dataset and architecture) and write ``run.json``.

    Returns True if this call created the directory (a failed run then removes it again).
    """
    from factory.dataset.storage import safe_url
    from models.config import ARCH_FIELDS
    from models.infer import check_same_labels

    created = False
    if run_dir.is_local and not os.path.exists(run_dir.path):
        os.makedirs(run_dir.path)
        created = True
    if run_dir.is_file(RUN_FILE):
        old = json.loads(run_dir.read_bytes(RUN_FILE))
        for k in ARCH_FIELDS:
            if old["arch"].get(k) != getattr(cfg, k):
                raise UserError(
                    f"{safe_url(run_dir)!r} holds a run with {k}={old['arch'].get(k)!r}; "
                    f"cannot resume it with {k}={getattr(cfg, k)!r} (use another `out`)",
                    param="out",
                )
        old_seed = (old.get("train_config") or {}).get("seed", cfg.seed)
        if old_seed != cfg.seed and _has_checkpoint(run_dir):
            raise UserError(
                f"{safe_url(run_dir)!r} holds a run with seed {old_seed}; its stream "
                f"order depends on it: resume it with `seed` {old_seed} (or use another `out`)",
                param="out",
            )
        if old["dataset_content_sha256"] != m.content_sha256:
            raise UserError(
                f"{safe_url(run_dir)!r} holds a run on dataset "
                f"{old['dataset_content_sha256'][:12]}…, not {m.content_sha256[:12]}… "
                "(use another `out`)",
                param="out",
            )
        check_same_labels(old["labels"], m.labels, "`out`")
        if _has_checkpoint(run_dir):
            log(f"resuming the run in {safe_url(run_dir)}")
    doc = {
        "arch": cfg.arch(),
        "dataset_content_sha256": m.content_sha256,
        "labels": m.labels,
        "train_config": cfg.model_dump(),
    }
    _write_file(run_dir, RUN_FILE, json.dumps(doc, indent=1).encode())
    return created


def _has_checkpoint(run_dir: Store) -> bool:
    try:
        infos = run_dir.list(RAY_NAME)
    except OSError:
        return False
    return any(i.base_name.startswith("checkpoint_") for i in infos)


def _remove_failed_run(run_dir: Store) -> None:
    """Remove a (local) run directory this run created if no checkpoint made it worth keeping."""
    import shutil

    if not _has_checkpoint(run_dir):
        shutil.rmtree(run_dir.path, ignore_errors=True)


def _cpus_per_worker(workers: int) -> float:
    """CPUs per training worker when not given: the cluster's free CPUs shared among the workers,
    but no more than one node has (a worker lives on one node), and at least 1."""
    import ray

    per_node = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    total = float(ray.available_resources().get("CPU", 1.0))
    share = min(total / max(workers, 1), max(per_node, default=1.0))
    return float(max(1, int(share)))


class _RunEvents:
    """The driver's view into a training run (a Ray actor): the step rank 0 reached (for the
    progress bar, as :class:`~factory.dataset.executor.ProgressActor`) and the warnings of the
    failures Ray Train recovered from (noted by :func:`_failure_notice` in its controller)."""

    def __init__(self):
        self.done: dict[str, int] = {}
        self.notes: list[str] = []

    def update(self, name: str, done: int) -> None:
        self.done[name] = max(done, self.done.get(name, 0))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def take(self) -> tuple[dict[str, int], list[str]]:
        """The step updates and the notes since the last call."""
        out, self.done, notes, self.notes = self.done, {}, self.notes, []
        return out, notes


def _failure_kind(failures: dict) -> str:
    """``died (TYPE)`` if a worker of a failed worker group *died* (its process killed, out of
    memory, its node lost: the others' errors then follow from it), else ``failed (TYPE: first
    line)``."""
    import ray.exceptions

    deaths = (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError)
    health = ("WorkerHealthCheckFailedError", "WorkerHealthCheckTimeoutError")
    for e in failures.values():
        if isinstance(e, deaths) or type(e).__name__ in health:
            return f"died ({type(e).__name__})"
    e = next(iter(failures.values()))
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"failed ({type(e).__name__}: {first})"


def _preempted(error: BaseException) -> bool:
    """Whether a worker's error is its death by a node preemption (as Ray Train tells it)."""
    error = getattr(error, "health_check_failure", error)
    return bool(getattr(error, "preempted", False))


def _failure_notice(events, max_failures: int):
    """A ``ray.train.UserCallback`` (run in Ray Train's controller) that notes each worker-group
    failure Ray Train will retry (``FailureConfig(max_failures)``: it counts every failure of
    the worker group) as a warning line in ``events``."""
    from ray.train import UserCallback

    class FailureNotice(UserCallback):
        def __init__(self):
            self.failures = 0

        def after_exception(self, run_context, worker_exceptions: dict) -> None:
            if not worker_exceptions:
                return
            if any(_preempted(e) for e in worker_exceptions.values()):
                # Ray Train counts these apart (FailureConfig.max_preemption_failures)
                events.note.remote(
                    "warning: a training worker's node was preempted; restarting from the last "
                    "checkpoint"
                )
                return
            self.failures += 1
            if self.failures > max_failures:
                return  # Ray Train gives up: fit() raises the error
            events.note.remote(
                f"warning: a training worker {_failure_kind(worker_exceptions)}; restarting "
                f"from the last checkpoint ({self.failures} of {max_failures})"
            )

    return FailureNotice()


def _fit(make_trainer, total: int | None, log):
    """Run the trainer (Ray Train restarts failed workers from the last checkpoint, see
    :func:`_trainer_factory`); draw the one progress bar and the restart warnings in the driver.

    Returns ``(result, restarts)``. A data or input error inside a worker (the ranks' coordinated
    stop, see :func:`_agree`) becomes one :class:`UserError`; other failures propagate once Ray
    Train gives up on them.
    """
    import threading

    import ray

    events = ray.remote(_RunEvents).options(num_cpus=0).remote()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = make_trainer(events, total is not None).fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="simaq-train", daemon=True)
    worker.start()
    restarts = _draw_progress(worker, events, total, log)
    err = outcome.get("error")
    if err is not None:
        raise err
    result = outcome["result"]
    value = getattr(result, "return_value", None)
    if isinstance(value, dict) and value.get("error"):
        raise _unpack(value["error"])
    return result, restarts


def _draw_progress(worker, events, total: int | None, log) -> int:
    """Poll ``events`` while ``worker`` runs: one tqdm bar (steps, rate, ETA) on stderr when
    ``total`` is given, and each restart's warning line; returns the number of restarts."""
    import ray

    bar, restarts, last = None, 0, False
    try:
        while not last:
            last = not worker.is_alive()
            worker.join(timeout=0.5)
            try:
                done, notes = ray.get(events.take.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - a lost poll only delays the bar
                continue
            if notes and bar is not None:  # the next attempt draws its own bar from its step
                bar.close()
                bar = None
            for msg in notes:
                log(msg)
            restarts += len(notes)
            step = done.get("train")
            if total is None or step is None:
                continue
            if bar is None:  # created at the first report: a resumed run starts where it was
                from tqdm import tqdm

                bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True)
            elif step > bar.n:
                bar.update(step - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return restarts


def _load_real(
    path: str,
    labels_path: str,
    cfg,
    normalization: dict,
    num_classes: int,
    axes: str = "auto",
    voxel_nm: float | None = None,
    data_nm: float | None = None,
    polarity: str = "as-is",
):
    """The few-shot real tomogram, normalised, and its labels, both in (Z, Y, X) order (``axes``:
    the files' order, or ``"auto"``, :func:`factory.tomo.axes.resolve_axes`), on the training
    data's grid, and a record of the scale: with the data's voxel size ``data_nm`` known, the
    tomogram's (``voxel_nm``, else its header's; neither: :class:`UserError`) sets the zoom, the
    volume is resampled trilinearly and the labels by :func:`models.infer.resample_labels`, so
    that the network is fine-tuned at the scale it segments at. ``polarity`` ``inverted``: the
    file's absorbing material is dark (:mod:`models.polarity`); the volume is negated after
    normalisation, as ``segment`` does."""
    from factory.tomo.axes import resolve_axes, to_zyx
    from models.data import check_window
    from models.infer import model_grid, normalize_volume, resample, resample_labels
    from models.volume_io import input_voxel_nm, read_volume

    if polarity not in ("as-is", "inverted"):
        raise UserError(f"expected as-is or inverted, got {polarity!r}", param="real_polarity")
    vol, header = read_volume(path, "real")
    lab, _ = read_volume(labels_path, "real_labels")
    if lab.shape != vol.shape:
        raise UserError(f"shape {lab.shape} differs from `real`'s {vol.shape}", param="real_labels")
    order, _ = resolve_axes(vol, axes, "real_axes")
    vol, lab = to_zyx(vol, order), to_zyx(lab, order)
    if lab.dtype.kind not in "iu":
        raise UserError(f"expected integer labels, got {lab.dtype}", param="real_labels")
    lab = lab.astype(np.int64)
    bad = (lab < -1) | (lab >= num_classes)
    if bad.any():
        raise UserError(
            f"value {int(lab[bad][0])} outside [-1, {num_classes}) (−1 = unannotated)",
            param="real_labels",
        )
    scale = {"voxel_nm": None, "voxel_source": None, "zoom": 1.0, "shape": list(vol.shape)}
    if data_nm:
        nm, source = input_voxel_nm(voxel_nm, header, path, "real_voxel_nm")
        grid, zoom = model_grid(vol.shape, nm, data_nm)
        vol, lab = resample(vol, grid), resample_labels(lab, grid)
        scale = {"voxel_nm": nm, "voxel_source": source, "zoom": zoom, "shape": list(grid)}
    check_window(vol.shape, cfg.axis, cfg.window, "`real`")
    if not (lab >= 0).any():
        raise UserError("no annotated voxel left on the training grid", param="real_labels")
    vol = normalize_volume(vol, normalization)
    scale["polarity"] = polarity
    return (-vol if polarity == "inverted" else vol), lab.astype(np.int8), scale


def _data_splits(m: TrainingData, cfg) -> tuple[list[ShardRecord], list[ShardRecord], list | None]:
    """The train and val shard records and the volume shape; UserError if untrainable."""
    train_shards = [s for s in m.shards if s.split == "train"]
    val_shards = [s for s in m.shards if s.split == "val"]
    if not train_shards:
        raise UserError(
            f"the dataset has no 'train' split (splits: {list(m.splits)})", param="data"
        )
    if "recon" not in m.fields or "labels" not in m.fields:
        raise UserError(f"the dataset has no recon/labels fields ({list(m.fields)})", param="data")
    shape = m.fields["recon"].shape or m.fields["recon"].shape_max
    if shape is not None and shape[cfg.axis] < cfg.window:
        raise UserError(
            f"volumes have {shape[cfg.axis]} slices along axis {cfg.axis}, fewer than the "
            f"window of {cfg.window}",
            param="data",
        )
    return train_shards, val_shards, shape


def _init_from(init: str | Store, cfg, m: TrainingData):
    """``--init``: the checkpoint's weights, its architecture forced onto ``cfg``, and a record."""
    from factory.dataset.storage import safe_url
    from models.config import ARCH_FIELDS, TrainConfig
    from models.infer import check_same_labels, load_checkpoint

    model, st = load_checkpoint(init, what="`init`")
    check_same_labels(st["labels"], m.labels, "`init`")
    arch = st["arch"]
    cfg = TrainConfig(**{**cfg.model_dump(), **{k: arch[k] for k in ARCH_FIELDS}})
    meta = {
        "checkpoint": safe_url(str(st.get("path"))),
        "dataset_content_sha256": st.get("dataset", {}).get("content_sha256"),
        "step": st.get("step"),
    }
    return cfg, model.state_dict(), meta


def plan_job(
    cfg,
    m: TrainingData,
    data: Store,
    run_dir: Store,
    *,
    init: str | Store | None = None,
    real: str | None = None,
    real_labels: str | None = None,
    real_axes: str = "auto",
    real_voxel_nm: float | None = None,
    real_polarity: str = "as-is",
) -> TrainJob:
    """The :class:`TrainJob` of a run on ``m`` (:func:`read_datasets`) read from ``data``, written
    to ``run_dir`` (``real``, ``real_labels``: local paths already absolute)."""
    from factory.dataset.storage import safe_url

    names = [c["name"] for c in sorted(m.labels["classes"], key=lambda c: c["id"])]
    init_weights, init_meta = None, None
    if init is not None:
        cfg, init_weights, init_meta = _init_from(init, cfg, m)
    train_shards, val_shards, shape = _data_splits(m, cfg)
    norm = dict(m.normalization)
    real_arrays = None
    if real is not None or real_labels is not None:
        if real is None or real_labels is None:
            raise UserError("`real` and `real_labels` must be given together")
        if cfg.real_ratio <= 0:
            raise UserError("must be > 0 when `real` is given", param="real_ratio")
        data_nm = (m.config.get("grid") or {}).get("voxel_nm")
        vol_r, lab_r, real_scale = _load_real(
            real, real_labels, cfg, norm, len(names), real_axes, real_voxel_nm, data_nm,
            real_polarity,
        )  # fmt: skip
        real_arrays = (vol_r, lab_r)
    n_slices = int(shape[cfg.axis]) if shape is not None else 64
    n_train = sum(s.nsamples for s in train_shards)
    steps_per_epoch = cfg.steps_per_epoch or max(
        1, math.ceil(n_train * n_slices / (cfg.batch_size * cfg.workers))
    )
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    grid = m.config.get("grid") or {}
    dataset = {"url": safe_url(data), "name": m.name, "version": m.version,
               "content_sha256": m.content_sha256, "voxel_nm": grid.get("voxel_nm"),
               "mixture": m.mixture}  # fmt: skip
    ckpt_meta = {
        "arch": cfg.arch(),
        "num_classes": len(names),
        "labels": m.labels,
        "dataset": dataset,
        "normalization": norm,
        "train_config": cfg.model_dump(),
        "init": init_meta,
        "real": None
        if real is None
        else {"volume": str(real), "labels": str(real_labels), **real_scale},
    }
    return TrainJob(
        cfg=cfg, data=data, fields=m.fields,
        class_names=names, train_shards=train_shards, val_shards=val_shards,
        steps_per_epoch=steps_per_epoch, total_steps=total, run_dir=run_dir,
        ckpt_meta=ckpt_meta, init_weights=init_weights, real=real_arrays,
    )  # fmt: skip


def _trainer_factory(job: TrainJob):
    """``make_trainer(events, progress)`` for :func:`_fit`: a TorchTrainer of ``job`` whose
    rank 0 reports its steps to the ``events`` actor when ``progress``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg, run_dir = job.cfg, job.run_dir
    resources = {"CPU": cfg.cpus_per_worker or _cpus_per_worker(cfg.workers)}
    job = replace(job, threads=max(1, int(resources["CPU"])))
    if cfg.use_gpu:
        resources["GPU"] = 1

    def make_trainer(events, progress: bool) -> TorchTrainer:
        return TorchTrainer(
            train_loop,
            train_loop_config={"job": job, "progress": events if progress else None},
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=resources
            ),
            run_config=ray.train.RunConfig(
                name=RAY_NAME,
                storage_path=run_dir.path,
                storage_filesystem=None if run_dir.is_local else run_dir.fs,
                # a failed worker group (a worker died, or raised) is restarted from the last
                # checkpoint; data errors are no failures but a stop of every rank (_agree)
                failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=3),
                callbacks=[_failure_notice(events, cfg.max_failures)],
            ),
        )

    return make_trainer


def train(
    cfg,
    data: str | Store | list[str | Store],
    run_dir: str | Store,
    *,
    init: str | Store | None = None,
    real: str | None = None,
    real_labels: str | None = None,
    real_axes: str = "auto",
    real_voxel_nm: float | None = None,
    real_polarity: str = "as-is",
    progress: bool = False,
    log=print,
    address: str | None = None,
    verbose: bool = False,
) -> dict:
    """Train (or resume) a segmentation network on a dataset (or a mixture: a list of
    datasets, see :func:`read_datasets`); return a summary dict.

    ``cfg`` is a :class:`~models.config.TrainConfig`. Raises :class:`UserError` for bad input: no
    ``train`` split, a run directory of another dataset/architecture, an ``--init`` checkpoint of
    another label table, a shard failing its checksum (unless ``cfg.allow_bad_shards``).
    """
    import ray

    from factory.cluster import start_ray
    from factory.dataset.manifest import dataset_store
    from factory.dataset.storage import absolute_url, as_store, safe_url

    # Ray Train workers run in other working directories: every user path is made absolute here
    # (a Store's local path is)
    stores = [dataset_store(u) for u in (data if isinstance(data, list | tuple) else [data])]
    run_dir = as_store(run_dir)
    init = None if init is None else as_store(init)
    real, real_labels = (None if p is None else absolute_url(p) for p in (real, real_labels))
    m = read_datasets(stores)
    job = plan_job(
        cfg, m, stores[0], run_dir, init=init, real=real, real_labels=real_labels,
        real_axes=real_axes, real_voxel_nm=real_voxel_nm, real_polarity=real_polarity,
    )  # fmt: skip
    created = _open_run_dir(run_dir, job.cfg, m, log)
    started = start_ray(
        address,
        verbose=verbose,
        runtime_env={"worker_process_setup_hook": "models.train.ray_worker_setup"},
    )
    t0 = time.perf_counter()
    try:
        make_trainer = _trainer_factory(job)
        result, restarts = _fit(make_trainer, job.total_steps if progress else None, log)
    except BaseException:
        if created:
            _remove_failed_run(run_dir)
        raise
    finally:
        if started:
            ray.shutdown()
    ckpt = getattr(result, "checkpoint", None)
    summary = {
        "run_dir": safe_url(run_dir),
        "checkpoint": None if ckpt is None else ckpt.path,
        "metrics": dict(result.metrics or {}),
        "wall_s": time.perf_counter() - t0,
        "steps_per_epoch": job.steps_per_epoch,
        "dataset_content_sha256": m.content_sha256,
        "restarts": restarts,
    }
    if summary["metrics"].get("bad_shards"):
        log(
            f"warning: skipped {summary['metrics']['bad_shards']} bad shard(s) (--allow-bad-shards)"
        )
    return summary
