"""Benchmark: forward projection + FBP of a (Z=256, Y=64, X=256) volume at 100 tilt angles.

Times ``factory.tomo`` (geometry set-up included: every simulated sample has its own jittered
angles, so each repeat builds a new :class:`~factory.tomo.ParallelProjector`) against scikit-image's
``radon`` + ``iradon`` looping over the 64 Y slices, in the same run, and prints the speed ratio,
the accuracy of both (forward projection against exact ellipse line integrals, FBP against the
phantom) and the peak extra memory of each.

    python bench/tomo.py                  # CPU, the numbers quoted in the README
    python bench/tomo.py --device cuda    # also times torch-radon if it is importable

Timings on a shared machine are noisy: compare the ratio, which is measured in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import threading
import time
import warnings

import numpy as np
import torch

from factory.tomo import Geometry, ParallelProjector
from factory.tomo.analytic import ellipse_image, ellipse_sinogram


class PeakRSS:
    """Peak resident memory above the level at entry, sampled from /proc every 2 ms (bytes)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: no sampling
            return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def phantom(nz: int, ny: int, nx: int, rng: np.random.Generator):
    """Random ellipsoids (axes along y): per-slice ellipse lists and the rasterised (Z, Y, X)."""
    r = 0.45 * min(nz, nx)
    n = 12
    body = [1.0, 0.0, 0.0, 0.62 * r, 0.85 * r, 0.0, 0.0, 0.48 * ny]
    blobs = np.column_stack(
        [
            rng.uniform(-0.5, 0.5, n),
            rng.uniform(-0.45, 0.45, n) * r,
            rng.uniform(-0.35, 0.35, n) * r,
            rng.uniform(0.05, 0.25, n) * r,
            rng.uniform(0.05, 0.25, n) * r,
            rng.uniform(-90, 90, n),
            rng.uniform(-0.3, 0.3, n) * ny,
            rng.uniform(0.15, 0.4, n) * ny,
        ]
    )
    ellipsoids = np.vstack([body, blobs])  # (rho, z0, x0, a, b, phi, y0, c)
    slices, vol = [], np.zeros((nz, ny, nx), np.float32)
    for iy in range(ny):
        y = iy - (ny - 1) / 2.0
        s2 = 1.0 - ((y - ellipsoids[:, 6]) / ellipsoids[:, 7]) ** 2
        e = ellipsoids[s2 > 0].copy()
        s = np.sqrt(s2[s2 > 0])
        e[:, 3] *= s
        e[:, 4] *= s
        slices.append(e[:, :6])
        vol[:, iy, :] = ellipse_image(e[:, :6], (nz, nx), supersample=2)
    return slices, vol


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 64, 256), metavar=("Z", "Y", "X"))
    ap.add_argument("--angles", type=int, default=100, help="angles from -50 deg in 1-deg steps")
    ap.add_argument("--repeat", type=int, default=5, help="runs of ours (new jitter each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-skimage", action="store_true")
    args = ap.parse_args(argv)
    nz, ny, nx = args.shape
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    print(
        f"tomo benchmark: volume (Z={nz}, Y={ny}, X={nx}), {args.angles} angles "
        f"{-50}..{-50 + args.angles - 1} deg (+/-0.25 deg jitter), detector {nx}, ramp FBP"
    )
    cpu = platform.processor() or platform.machine()
    print(
        f"machine: {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print("note: measured on a shared machine; compare the ratio, measured in this one run")
    slices, vol = phantom(nz, ny, nx, rng)
    base = -50.0 + np.arange(args.angles, dtype=np.float64)
    angle_sets = [base + rng.uniform(-0.25, 0.25, base.size) for _ in range(args.repeat)]
    inside = (
        np.hypot(
            *np.meshgrid(np.arange(nz) - (nz - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
        )
        <= (min(nz, nx) - 1) / 2
    )  # noqa: E501

    # -- ours --
    # Run 0 is cold (first allocations, memory sampled); the timed runs sample nothing, because a
    # sampling thread steals time from the two torch threads on a 2-core machine.
    vol_t = torch.from_numpy(vol).to(device)
    times, cold, peak = [], None, 0.0

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i, theta in enumerate([angle_sets[0]] + angle_sets):
        with PeakRSS() if i == 0 else contextlib.nullcontext() as mem:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            t0 = time.perf_counter()
            proj = ParallelProjector((nz, nx), theta, device=device)
            sino = proj.forward(vol_t)
            rec = proj.fbp(sino)
            sync()
            dt = time.perf_counter() - t0
        if i == 0:
            cold, peak = dt, mem.extra_mib
            gpu = (
                f", GPU peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
                if device.type == "cuda"
                else ""
            )
            print(
                f"ours cold run (first allocations): {dt:.3f} s, peak +{peak:.0f} MiB RSS{gpu}, "
                f"matrices {proj.memory_bytes() / 2**20:.0f} MiB"
            )
        else:
            times.append(dt)
        proj.release()  # recycle its buffers, as the functional API's cache does on eviction
    print(
        "ours warm runs (set-up + forward + FBP, new angles each): "
        + ", ".join(f"{t:.3f}" for t in times)
        + " s"
    )
    ours_t = float(np.median(times))
    theta = angle_sets[-1]
    sino_np = sino.cpu().numpy()
    rec_np = rec.cpu().numpy()
    exact = np.stack([ellipse_sinogram(e, theta, nx) for e in slices], axis=1)
    ours_fwd = rel(sino_np, exact)
    ours_fbp = rel(rec_np.transpose(0, 2, 1)[inside], vol.transpose(0, 2, 1)[inside])
    print(f"ours: median {ours_t:.3f} s over {len(times)} warm runs")

    # -- torch-radon (GPU peer) --
    if device.type == "cuda":
        from factory.tomo import radon_backend

        geom = Geometry.make((nz, nx), angle_sets[0], nx)
        if radon_backend.available() and radon_backend.usable(vol_t, geom):
            tr_times = []
            for theta in angle_sets:
                geom = Geometry.make((nz, nx), theta, nx)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                radon_backend.fbp(radon_backend.forward(vol_t, geom), geom, "ramp")
                torch.cuda.synchronize()
                tr_times.append(time.perf_counter() - t0)
            tr = float(np.median(tr_times))
            print(
                f"torch-radon: median {tr:.3f} s; ours/torch-radon time ratio {ours_t / tr:.2f} "
                f"({'ours faster' if ours_t < tr else 'torch-radon faster'})"
            )
        else:
            print("torch-radon: not importable here, no GPU peer timed")

    if args.skip_skimage:
        return
    # -- scikit-image, slice by slice --
    from skimage.transform import iradon, radon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with PeakRSS() as mem:  # memory over a few slices (it does one slice at a time)
            for iy in range(min(4, ny)):
                iradon(radon(vol[:, iy, :], theta=theta, circle=True), theta=theta, circle=True)
        t0 = time.perf_counter()
        sk_sino = np.empty((theta.size, ny, nx), np.float32)
        sk_rec = np.empty_like(vol)
        for iy in range(ny):
            s = radon(vol[:, iy, :], theta=theta, circle=True)
            sk_sino[:, iy, :] = s.T
            sk_rec[:, iy, :] = iradon(s, theta=theta, circle=True, output_size=nx)
        sk_t = time.perf_counter() - t0
    # scikit-image's axis is at pixel N // 2 (ours: (N - 1) / 2): its exact reference is the same
    # ellipses half a voxel further from its axis, read on a detector centred at N // 2
    half = 0.5 * (1 - nx % 2)
    shifted = [e - np.array([0, half, half, 0, 0, 0]) for e in slices]
    exact_sk = np.stack([ellipse_sinogram(e, theta, nx, center_offset=half) for e in shifted], 1)
    sk_fwd = rel(sk_sino, exact_sk)
    sk_fbp = rel(sk_rec.transpose(0, 2, 1)[inside], vol.transpose(0, 2, 1)[inside])
    print(
        f"scikit-image: {sk_t:.3f} s ({ny} slices radon+iradon), peak +{mem.extra_mib:.0f} MiB RSS"
    )
    print(
        f"speed-up: {sk_t / ours_t:.1f}x warm (scikit-image time / ours median warm time), "
        f"{sk_t / cold:.1f}x for the cold first run"
    )
    print(
        f"forward accuracy, rel. L2 vs exact line integrals: ours {ours_fwd:.4f}, "
        f"scikit-image {sk_fwd:.4f}"
    )
    print(
        f"FBP accuracy, rel. L2 vs phantom inside the FOV circle: ours {ours_fbp:.4f}, "
        f"scikit-image {sk_fbp:.4f}  (limited 100-deg tilt range: the missing wedge dominates)"
    )


if __name__ == "__main__":
    main()
