"""Placement of the phantom's objects in numpy (no voxels): rotations, packings, layout, tube networks.

Conventions: points are (z, y, x) in voxels. A cell has a centre in the grid and a rotation ``R``
(3x3, columns are the cell's axes in grid coordinates); organelles live in the cell's local frame
``q = R.T @ (p - centre)`` as axis-aligned ellipsoids. Ball-in/out-of-ellipsoid tests are exact (up
to float rounding); other tests are *conservative*: an accepted configuration is guaranteed free of
overlap; a rejected one may in rare cases have fitted.
"""

from __future__ import annotations

import math

import numpy as np


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Uniform random unit vector(s) in 3D: (3,) or (n, 3)."""
    v = rng.normal(size=(3,) if n is None else (n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def uniform_in_ball(rng: np.random.Generator) -> np.ndarray:
    """A point uniformly distributed in the unit ball (3,)."""
    return random_unit(rng) * rng.uniform() ** (1.0 / 3.0)


def ellipsoid_norm(p: np.ndarray, radii: np.ndarray) -> float:
    """``|p / radii|``: < 1 inside the axis-aligned ellipsoid; Lipschitz with ``1/min(radii)``."""
    return float(np.linalg.norm(np.asarray(p) / np.asarray(radii)))


def surface_distance(p, radii) -> float:
    """Signed Euclidean distance from ``p`` to the surface of the axis-aligned ellipsoid of
    ``radii`` centred at 0: > 0 outside, < 0 inside (voxels).

    The closest surface point is ``x_i = a_i^2 p_i / (t + a_i^2)`` where ``t`` is the root of
    ``sum (a_i p_i / (t + a_i^2))^2 = 1`` (monotone in ``t``; solved by bisection); inside, when the
    root lies at the pole ``t = -min a_i^2`` (p on the plane of the shortest axis), the closest
    points are found in closed form.
    """
    a2 = [float(r) * float(r) for r in radii]
    q = [abs(float(x)) for x in p]
    s = sum(qi * qi / ai for qi, ai in zip(q, a2, strict=True))
    if s == 1.0:
        return 0.0

    def f(t: float) -> float:
        return sum(ai * qi * qi / (t + ai) ** 2 for qi, ai in zip(q, a2, strict=True)) - 1.0

    amin = min(a2)
    if s > 1.0:
        lo, hi = 0.0, math.sqrt(max(a2)) * math.sqrt(sum(qi * qi for qi in q))
    else:
        lo, hi = -amin * (1.0 - 1e-12), 0.0
        if f(lo) <= 0.0:  # the pole case: x = p off the shortest axes, the rest on them
            x2, far = 0.0, 1.0
            for qi, ai in zip(q, a2, strict=True):
                if ai > amin * (1.0 + 1e-12):
                    xi = ai * qi / (ai - amin)
                    x2 += (xi - qi) ** 2
                    far -= xi * xi / ai
                else:
                    far -= qi * qi / ai  # qi ~ 0 here
            return -math.sqrt(x2 + amin * max(far, 0.0))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if f(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    t = 0.5 * (lo + hi)
    d = math.sqrt(sum((ai * qi / (t + ai) - qi) ** 2 for qi, ai in zip(q, a2, strict=True)))
    return d if s > 1.0 else -d


def sphere_inside(c: np.ndarray, r: float, centre: np.ndarray, radii: np.ndarray, limit=1.0):
    """True if the ball (c, r) lies inside the ellipsoid (``centre``, ``radii`` x ``limit``)."""
    radii = np.asarray(radii, float) * limit
    rel = np.asarray(c, float) - centre
    n = ellipsoid_norm(rel, radii)
    if n + r / radii.min() <= 1.0:  # fast sufficient test
        return True
    if n >= 1.0 or r >= radii.min():
        return False
    return -surface_distance(rel, radii) >= r


def sphere_outside(c: np.ndarray, r: float, centre: np.ndarray, radii: np.ndarray) -> bool:
    """True if the ball (c, r) lies wholly outside the ellipsoid (``centre``, ``radii``)."""
    radii = np.asarray(radii, float)
    rel = np.asarray(c, float) - centre
    n = ellipsoid_norm(rel, radii)
    if n - r / radii.min() >= 1.0:  # fast sufficient test
        return True
    if n <= 1.0:
        return False
    return surface_distance(rel, radii) >= r


def extent_along(radii: np.ndarray, v: np.ndarray) -> float:
    """Distance from an ellipsoid's centre to its surface along the unit vector ``v``."""
    return 1.0 / float(np.linalg.norm(np.asarray(v) / np.asarray(radii)))


# --- 3D Apollonian packing -----------------------------------------------------------------------


def apollonian_depth1() -> tuple[np.ndarray, np.ndarray]:
    """A depth-1 3D Apollonian packing of the unit sphere: 9 mutually tangent-or-apart spheres.

    Generation 0: four equal spheres in a regular tetrahedron, each tangent to the others and to the
    unit sphere (radius ``1 / (1 + sqrt(3/2))``). Depth 1 fills the five gaps: the central sphere
    tangent to the four, and one sphere in each gap between three of them and the unit sphere,
    whose curvature solves the Soddy-Gossett relation (Descartes' theorem in 3D,
    ``(sum k)^2 = 3 sum k^2``). Returns centres (9, 3) and radii (9,).
    """
    r0 = 1.0 / (1.0 + math.sqrt(1.5))
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / math.sqrt(3.0)
    d = 1.0 - r0
    centres = [tet * d]
    radii = [np.full(4, r0)]
    centres.append(np.zeros((1, 3)))
    radii.append(np.array([d - r0]))
    # Gap sphere opposite inner sphere i: tangent to the outer sphere (k = -1) and the other three.
    k = [-1.0, 1 / r0, 1 / r0, 1 / r0]
    s, q = sum(k), sum(x * x for x in k)
    # k5 solves (s + k5)^2 = 3 (q + k5^2): 2 k5^2 - 2 s k5 + 3 q - s^2 = 0; take the larger root.
    k5 = (2 * s + math.sqrt(4 * s * s - 8 * (3 * q - s * s))) / 4
    r5 = 1.0 / k5
    centres.append(-tet * (1.0 - r5))
    radii.append(np.full(4, r5))
    return np.concatenate(centres), np.concatenate(radii)


# --- cell layout ---------------------------------------------------------------------------------


def _first_free_t(origin, u, z, centres, reach) -> float:
    """Smallest t >= 0 such that (z, origin + t u) is at least ``reach[j]`` from every centre j."""
    intervals = []
    for c, dmin in zip(centres, reach, strict=True):
        w = origin - c[1:]
        dz2 = (z - c[0]) ** 2
        b = float(u @ w)
        cc = float(w @ w) + dz2 - dmin * dmin
        disc = b * b - cc
        if disc > 0:
            root = math.sqrt(disc)
            intervals.append((-b - root, -b + root))
    t = 0.0
    moved = True
    while moved:
        moved = False
        for lo, hi in intervals:
            if lo < t < hi:
                t = hi + 1e-6
                moved = True
    return t


def layout_cells(
    bounds: list[float],
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    gap: float,
    z_offsets: list[float],
    xy_offset: tuple[float, float],
    directions: int = 24,
) -> list[np.ndarray | None]:
    """Compact, overlap-free layout of cells given their bounding radii (voxels).

    Cells lie around the mid-plane in Z (the beam direction at 0°) and spread in Y, X. The first
    cell starts the cluster; each next cell slides in from the cluster's centroid along the best of
    ``directions`` random in-plane rays to the first position where its bounding sphere clears every
    placed sphere by ``gap`` (solved exactly per ray: no overlap is possible). "Best" keeps the
    cluster's Y-X bounding box smallest (it must fit the grid); a cell with no fitting ray is left
    out. The cluster is then centred in the grid, offset by ``xy_offset`` as far as the bounds
    allow. Returns one centre (z, y, x) per cell, or None for a cell that did not fit.
    """
    shape_arr = np.asarray(shape, float)
    mid = (shape_arr - 1.0) / 2.0
    room = shape_arr[1:] - 1.0
    pts: dict[int, np.ndarray] = {}  # cluster coordinates (z absolute, y and x relative)

    def box(items):
        lo = np.min([p[1:] - r for p, r in items], axis=0)
        hi = np.max([p[1:] + r for p, r in items], axis=0)
        return lo, hi

    for i, rho in enumerate(bounds):
        if 2.0 * rho > shape_arr.min() - 1.0:
            continue
        z = float(np.clip(mid[0] + z_offsets[i], rho, shape_arr[0] - 1.0 - rho))
        if not pts:
            pts[i] = np.array([z, 0.0, 0.0])
            continue
        placed = list(pts)
        origin = np.mean([pts[j][1:] for j in placed], axis=0)
        reach = [rho + bounds[j] + gap for j in placed]
        phi0 = rng.uniform(0.0, 2.0 * math.pi)
        best = None
        for k in range(directions):
            phi = phi0 + 2.0 * math.pi * k / directions
            u = np.array([math.sin(phi), math.cos(phi)])
            t = _first_free_t(origin, u, z, [pts[j] for j in placed], reach)
            p = np.array([z, *(origin + t * u)])
            lo, hi = box([(pts[j], bounds[j]) for j in placed] + [(p, rho)])
            ext = hi - lo
            if np.any(ext > room):
                continue
            score = (float(np.max(ext / room)), t)
            if best is None or score < best[0]:
                best = (score, p)
        if best is not None:
            pts[i] = best[1]
    out: list[np.ndarray | None] = [None] * len(bounds)
    if not pts:
        return out
    lo, hi = box([(pts[j], bounds[j]) for j in pts])
    centre = mid[1:] + np.asarray(xy_offset, float)
    shift = centre - (lo + hi) / 2.0
    shift = np.clip(shift, -lo, room - hi)  # keep every cell inside the grid
    for j, p in pts.items():
        out[j] = np.array([p[0], *(p[1:] + shift)])
    return out


# --- mitochondrial networks ----------------------------------------------------------------------


def tube_network(
    rng: np.random.Generator,
    radii: np.ndarray,
    *,
    steps: int,
    step_len: float,
    turn_sd: float,
    shell: tuple[float, float],
    branch_probability: float,
    branch_steps,
    max_segments: int = 400,
) -> np.ndarray:
    """Segments (n, 2, 3) of one branching tube network on a shell of an ellipsoid (local frame).

    A persistent random walk on the unit sphere (angular step ``step_len`` over the local radius,
    turning by N(0, ``turn_sd``) radians per step) is mapped onto the ellipsoid of ``radii`` scaled by
    a normalised radius that itself random-walks within ``shell``. Each step spawns a side branch with
    ``branch_probability`` (``branch_steps()`` segments long, no further branching).
    """
    radii = np.asarray(radii, float)
    segs: list[tuple[np.ndarray, np.ndarray]] = []

    def walk(u, t, rho, n, can_branch):
        p = rho * radii * u
        for _ in range(n):
            if len(segs) >= max_segments:
                return
            # Turn the heading about the radial direction, then step along the great circle.
            ang = rng.normal(0.0, turn_sd)
            b = np.cross(u, t)
            t = math.cos(ang) * t + math.sin(ang) * b
            local_r = float(np.linalg.norm(rho * radii * u))
            delta = step_len / max(local_r, 1e-6)
            u_new = math.cos(delta) * u + math.sin(delta) * t
            u_new /= np.linalg.norm(u_new)
            t = t - (t @ u_new) * u_new
            t /= np.linalg.norm(t)
            u = u_new
            rho = float(np.clip(rho + rng.normal(0.0, 0.02), shell[0], shell[1]))
            q = rho * radii * u
            segs.append((p, q))
            p = q
            if can_branch and rng.uniform() < branch_probability:
                side = np.cross(u, t) * (1 if rng.uniform() < 0.5 else -1)
                walk(u.copy(), side, rho, branch_steps(), False)

    u0 = random_unit(rng)
    t0 = np.cross(u0, random_unit(rng))
    t0 /= max(np.linalg.norm(t0), 1e-9)
    walk(u0, t0, rng.uniform(*shell), steps, True)
    if not segs:
        return np.zeros((0, 2, 3))
    return np.array([[a, b] for a, b in segs])
