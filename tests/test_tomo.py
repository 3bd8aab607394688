"""Accuracy and contract tests of the tomography core (factory.tomo)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from factory.tomo import (
    ParallelProjector,
    angle_weights,
    back_project,
    fbp,
    forward_project,
    get_projector,
    sirt,
)
from factory.tomo.analytic import SHEPP_LOGAN, ellipse_image, ellipse_sinogram, scaled

skimage_transform = pytest.importorskip("skimage.transform")
radon, iradon = skimage_transform.radon, skimage_transform.iradon

DATA = Path(
    os.environ.get("SIMAQ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def disk_mask(n: int) -> np.ndarray:
    zz, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    return zz**2 + xx**2 <= ((n - 1) / 2.0) ** 2


def sk_radon(img, theta):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return radon(img, theta=theta, circle=True).T


def sk_iradon(sino, theta, filt="ramp"):
    return iradon(sino.T, theta=theta, filter_name=filt, circle=True, output_size=sino.shape[1])


# scikit-image's radon puts the rotation centre at pixel N // 2; for odd N that is our (N - 1) / 2,
# so the two geometries are identical and the sinograms comparable bin for bin (same angle sign
# too).
N = 65
ANGLE_SETS = {
    "full": np.linspace(0.0, 180.0, N, endpoint=False),
    "tilt": np.arange(-60.0, 61.0, 2.0),
    "irregular": np.sort(np.random.default_rng(1).uniform(-90.0, 90.0, 50)),
}


@pytest.fixture(scope="module")
def shepp():
    ell = scaled(SHEPP_LOGAN, 0.45 * N)
    return ell, ellipse_image(ell, (N, N), supersample=8)


# -- geometry contract --
def test_zero_degrees_is_sum_along_z():
    rng = np.random.default_rng(0)
    vol = rng.random((12, 5, 17)).astype(np.float32)
    sino = forward_project(vol, [0.0])
    assert sino.shape == (1, 5, 17) and sino.dtype == np.float32
    np.testing.assert_allclose(sino[0], vol.sum(axis=0), rtol=1e-6, atol=1e-5)
    s2 = forward_project(torch.from_numpy(vol[:, 2]), [0.0])
    assert isinstance(s2, torch.Tensor) and s2.shape == (1, 17)
    np.testing.assert_allclose(s2[0].numpy(), vol[:, 2].sum(axis=0), rtol=1e-6, atol=1e-5)


def test_point_lands_at_documented_detector_coordinate():
    nz, nx, det = 21, 31, 41
    vol = np.zeros((nz, nx), np.float32)
    iz, ix = 4, 25  # centred (z, x) = (-6, 10)
    vol[iz, ix] = 1.0
    angles = np.array([-70.0, -30.0, 0.0, 20.0, 55.0, 90.0, 135.0])
    sino = forward_project(vol, angles, det_count=det, center_offset=2.5)
    theta = np.deg2rad(angles)
    t = 10 * np.cos(theta) + 6 * np.sin(theta) + 2.5
    centroid = (sino * (np.arange(det) - (det - 1) / 2)).sum(1) / sino.sum(1)
    # a distance-driven footprint is a strip of width c = max(|cos|, |sin|) binned by the pixels:
    # its centroid is within (1 - c) / 2 of t
    c = np.maximum(np.abs(np.cos(theta)), np.abs(np.sin(theta)))
    assert np.all(np.abs(centroid - t) <= (1 - c) / 2 + 1e-4)
    np.testing.assert_allclose(sino.sum(1), 1.0, atol=1e-5)  # one voxel's mass at every angle


def test_mass_is_conserved_at_every_angle():
    rng = np.random.default_rng(1)
    vol = rng.random((30, 3, 24)).astype(np.float32)
    angles = rng.uniform(-180, 180, 40)
    sino = forward_project(vol, angles, det_count=50, center_offset=-1.7)
    np.testing.assert_allclose(
        sino.sum(axis=2), np.broadcast_to(vol.sum(axis=(0, 2)), (40, 3)), rtol=2e-5
    )


def test_integer_center_offset_shifts_detector():
    rng = np.random.default_rng(2)
    vol = rng.random((16, 16)).astype(np.float32)
    angles = np.linspace(0, 180, 23, endpoint=False)
    s0 = forward_project(vol, angles, det_count=40)
    s3 = forward_project(vol, angles, det_count=40, center_offset=3.0)
    np.testing.assert_allclose(s3[:, 3:], s0[:, :-3], atol=2e-5)


@pytest.mark.parametrize(
    "shape,det,offset",
    [((23, 31), None, 0.0), ((40, 17), 29, 1.25), ((16, 4, 16), 24, -3.5)],
)
def test_back_project_is_exact_adjoint(shape, det, offset):
    rng = np.random.default_rng(3)
    angles = np.concatenate([[0.0, 45.0, -45.0, 90.0, 135.0, 200.0], rng.uniform(-180, 360, 25)])
    x = rng.standard_normal(shape).astype(np.float32)
    ax = forward_project(x, angles, det_count=det, center_offset=offset)
    y = rng.standard_normal(ax.shape).astype(np.float32)
    aty = back_project(y, angles, shape=shape, center_offset=offset)
    assert aty.shape == x.shape
    lhs = float(np.dot(ax.ravel().astype(np.float64), y.ravel()))
    rhs = float(np.dot(x.ravel().astype(np.float64), aty.ravel()))
    assert abs(lhs - rhs) <= 1e-5 * (abs(lhs) + np.linalg.norm(ax) * np.linalg.norm(y) * 1e-2)


def test_adjoint_matrix_is_bitwise_transpose():
    proj = ParallelProjector((13, 9), np.linspace(-90, 90, 17), det_count=15, center_offset=0.7)
    a = proj.matrix("A").to_dense().view(17 * 15, 13 + 6, 9 + 6)[:, 3:-3, 3:-3]  # drop ghosts
    at = proj.matrix("AT").to_dense()
    assert torch.equal(a.reshape(17 * 15, 13 * 9).t(), at)
    assert int((a > 0).sum(1).max()) > 0 and float(a.sum()) > 0


def test_volume_batch_equals_slices_and_torch_equals_numpy():
    rng = np.random.default_rng(4)
    vol = rng.random((20, 6, 22)).astype(np.float32)
    angles = rng.uniform(-60, 60, 15)
    s3 = forward_project(vol, angles)
    for y in (0, 5):
        np.testing.assert_allclose(
            s3[:, y], forward_project(vol[:, y], angles), rtol=1e-6, atol=1e-6
        )
    st = forward_project(torch.from_numpy(vol), torch.tensor(angles))
    np.testing.assert_array_equal(st.numpy(), s3)
    r3 = fbp(s3, angles, shape=(20, 6, 22))
    np.testing.assert_allclose(r3[:, 5], fbp(s3[:, 5], angles, shape=(20, 22)), atol=1e-6)
    v64 = forward_project(torch.from_numpy(vol).double(), angles)
    assert v64.dtype == torch.float64


# -- accuracy against exact line integrals and against scikit-image --
@pytest.mark.parametrize("name", sorted(ANGLE_SETS))
def test_projection_matches_analytic_ellipses_as_well_as_skimage(shepp, name):
    ell, img = shepp
    theta = ANGLE_SETS[name]
    exact = ellipse_sinogram(ell, theta, N)
    ours = forward_project(img, theta)
    err, err_sk = rel(ours, exact), rel(sk_radon(img, theta), exact)
    assert err <= err_sk, (err, err_sk)
    assert err < 0.07  # the rest is the rasterisation of the ellipse edges


def test_projection_of_smooth_object_is_close_to_exact():
    # a wide, soft-edged object isolates the projector error from rasterisation error
    n = 63
    zz, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    sigma = 6.0
    img = np.exp(-(zz**2 + (xx - 5) ** 2) / (2 * sigma**2)).astype(np.float32)
    theta = np.linspace(0, 180, 37)
    t = np.arange(n) - (n - 1) / 2.0
    exact = (
        sigma
        * np.sqrt(2 * np.pi)
        * np.exp(-((t[None, :] - 5 * np.cos(np.deg2rad(theta))[:, None]) ** 2) / (2 * sigma**2))
    )
    err = rel(forward_project(img, theta), exact)
    assert err < 3e-3, err


@pytest.mark.parametrize("filt", ["ramp", "shepp-logan", "cosine", "hamming", "hann"])
def test_fbp_full_range_matches_or_beats_skimage(shepp, filt):
    ell, img = shepp
    theta = ANGLE_SETS["full"]
    exact = ellipse_sinogram(ell, theta, N)
    inside = disk_mask(N)
    ours = fbp(exact, theta, filter=filt)
    err, err_sk = (
        rel(ours[inside], img[inside]),
        rel(sk_iradon(exact, theta, filt)[inside], img[inside]),
    )
    assert err <= err_sk * (1 + 1e-4), (err, err_sk)
    assert err < (0.2 if filt == "ramp" else 0.4)


@pytest.mark.parametrize("name", ["tilt", "irregular"])
def test_fbp_limited_and_irregular_angles_beat_skimage(shepp, name):
    ell, img = shepp
    theta = ANGLE_SETS[name]
    exact = ellipse_sinogram(ell, theta, N)
    inside = disk_mask(N)
    err = rel(fbp(exact, theta)[inside], img[inside])
    err_sk = rel(sk_iradon(exact, theta)[inside], img[inside])
    assert err <= err_sk, (err, err_sk)


def test_fbp_of_forward_projection_recovers_volume(shepp):
    _, img = shepp
    theta = np.linspace(0, 180, 2 * N, endpoint=False)
    inside = disk_mask(N)
    rec = fbp(forward_project(img, theta), theta, filter="ramp", shape=(N, N))
    err = rel(rec[inside], img[inside])
    assert err < 0.25
    assert err <= rel(sk_iradon(sk_radon(img, theta), theta)[inside], img[inside])
    assert abs(rec[inside].mean() - img[inside].mean()) < 2e-3


# -- scikit-image's own test properties --
@pytest.mark.parametrize("n", [15, 16, 64])
def test_centred_pixel_gives_flat_sinogram(n):
    img = np.zeros((n, n), np.float32)
    img[(n - 1) // 2 : n // 2 + 1, (n - 1) // 2 : n // 2 + 1] = 1.0  # the centre pixel(s)
    theta = np.linspace(0.0, 180.0, n, endpoint=False)
    sino = forward_project(img, theta)
    assert np.std(np.argmax(sino, axis=1)) < 1e-6 if n % 2 else True
    np.testing.assert_allclose(sino.sum(1), img.sum(), rtol=1e-5)
    centroid = (sino * np.arange(n)).sum(1) / sino.sum(1)
    np.testing.assert_allclose(centroid, (n - 1) / 2.0, atol=1e-4)


def test_theta_and_theta_plus_180_agree():
    rng = np.random.default_rng(5)
    img = rng.random((24, 24)).astype(np.float32)
    theta = rng.uniform(0, 180, 20)
    s = forward_project(img, theta, det_count=35)
    s180 = forward_project(img, theta + 180.0, det_count=35)
    np.testing.assert_allclose(s180, s[:, ::-1], atol=1e-4)
    r = fbp(s, theta, shape=(24, 24))
    r180 = fbp(s180, theta + 180.0, shape=(24, 24))
    np.testing.assert_allclose(r180, r, atol=1e-4)


def test_uniform_disk_reconstructs_without_bias():
    # scikit-image's test_iradon_bias_circular_phantom, error taken inside the reconstruction circle
    # (iradon zeroes the outside)
    pixels = 128
    xy = np.arange(-pixels / 2, pixels / 2) + 0.5
    x, y = np.meshgrid(xy, xy)
    image = (x**2 + y**2 <= (pixels / 4) ** 2).astype(np.float32)
    theta = np.linspace(0.0, 180.0, pixels, endpoint=False)
    rec = fbp(forward_project(image, theta), theta)
    inside = disk_mask(pixels)
    assert abs(np.mean((rec - image)[inside])) < 5e-5


def test_angle_weights():
    np.testing.assert_allclose(angle_weights(np.arange(180.0)), np.pi / 180)
    np.testing.assert_allclose(angle_weights(np.arange(360.0)), np.pi / 360)
    w = angle_weights(np.array([-50.0, -48.0, -40.0, 10.0]))
    np.testing.assert_allclose(np.rad2deg(w), [2.0, 5.0, 29.0, 50.0])
    np.testing.assert_allclose(angle_weights(np.array([10.0, -50.0])), np.deg2rad([60.0, 60.0]))


# -- SIRT --
def test_sirt_converges_and_is_nonnegative(shepp):
    _, img = shepp
    img = np.clip(img, 0, None)
    theta = np.arange(-60.0, 61.0, 3.0)
    sino = forward_project(img, theta)
    errs = [rel(sirt(sino, theta, iterations=k, shape=img.shape), img) for k in (2, 10, 50)]
    assert errs[0] > errs[1] > errs[2]
    rec = sirt(
        torch.from_numpy(sino)[:, None, :].expand(-1, 2, -1), theta, iterations=10, shape=(N, 2, N)
    )
    assert isinstance(rec, torch.Tensor) and rec.shape == (N, 2, N) and float(rec.min()) >= 0.0
    np.testing.assert_allclose(
        rec[:, 1].numpy(), sirt(sino, theta, iterations=10, shape=img.shape), atol=1e-5
    )
    free = sirt(sino - 0.05, theta, iterations=10, shape=img.shape, nonneg=False)
    assert free.min() < 0


# -- autograd --
def test_gradients_through_autograd():
    angles = [-40.0, 10.0, 65.0, 100.0]
    x = torch.rand(6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: forward_project(v, angles, det_count=9), (x,))
    y = torch.rand(4, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: back_project(s, angles, shape=(6, 7)), (y,))
    assert torch.autograd.gradcheck(lambda s: fbp(s, angles, shape=(6, 7)), (y,))
    # gradient descent on a reconstruction loss moves towards the truth
    truth = torch.rand(10, 10)
    ang = np.linspace(0, 180, 12, endpoint=False)
    target = forward_project(truth, ang)
    v = torch.zeros(10, 10, requires_grad=True)
    losses = []
    opt = torch.optim.SGD([v], lr=0.003)  # below 2 / ||A||² (||A||² ≈ n_angles · Z)
    for _ in range(40):
        opt.zero_grad()
        loss = ((forward_project(v, ang) - target) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]


# -- bad input --
@pytest.mark.parametrize(
    "call,word",
    [
        (lambda: forward_project(np.zeros(5), [0.0]), "volume"),
        (lambda: forward_project(np.zeros((2, 2, 2, 2)), [0.0]), "volume"),
        (lambda: forward_project(np.zeros((4, 4), complex), [0.0]), "volume"),
        (lambda: forward_project(np.zeros((4, 4)), []), "angles_deg"),
        (lambda: forward_project(np.zeros((4, 4)), [0.0, np.nan]), "angles_deg"),
        (lambda: forward_project(np.zeros((4, 4)), [[0.0, 1.0]]), "angles_deg"),
        (lambda: forward_project(np.zeros((4, 4)), ["a"]), "angles_deg"),
        (lambda: forward_project(np.zeros((4, 4)), [0.0], det_count=0), "det_count"),
        (lambda: forward_project(np.zeros((4, 4)), [0.0], det_count=2.5), "det_count"),
        (lambda: forward_project(np.zeros((4, 4)), [0.0], center_offset=np.inf), "center_offset"),
        (lambda: back_project(np.zeros((3, 4)), [0.0, 1.0], shape=(4, 4)), "sinogram"),
        (lambda: back_project(np.zeros((2, 3, 4)), [0.0, 1.0], shape=(4, 2, 4)), "shape"),
        (lambda: back_project(np.zeros((2, 4)), [0.0, 1.0], shape=(4, -1)), "shape"),
        (lambda: back_project(np.zeros((2, 4)), [0.0, 1.0], shape=4), "shape"),
        (lambda: fbp(np.zeros((2, 4)), [0.0, 1.0], filter="shepp"), "filter"),
        (lambda: fbp(np.zeros((2, 0)), [0.0, 1.0]), "sinogram"),
        (lambda: sirt(np.zeros((2, 4)), [0.0, 1.0], iterations=0, shape=(4, 4)), "iterations"),
        (lambda: ParallelProjector((4, 4), [0.0]).forward(torch.zeros(5, 4)), "volume"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_projector_is_cached_per_geometry():
    a = get_projector((8, 8), [0.0, 30.0])
    assert get_projector((8, 8), np.array([0.0, 30.0])) is a
    assert get_projector((8, 8), [0.0, 31.0]) is not a


# -- real data --
def _load(folder: str, *names: str):
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"shared test data {path} is absent (set SIMAQ_SHARED_DATA to its folder)")
    return [np.load(path / f"{n}.npy", allow_pickle=False) for n in names]


def test_tooth_microct_with_offset_axis_matches_skimage():
    proj, flats, darks, theta = _load("tooth_microct", "projections", "flats", "darks", "theta_deg")
    dark = darks.mean(0)
    sino = -np.log((proj - dark) / (flats.mean(0) - dark)).astype(np.float32)  # (181, 2, 640)
    # The axis is at column 295.5. Bin columns (1, 2), (3, 4), ... so it falls on binned column 147
    # exactly: then scikit-image (axis at N // 2) can reconstruct the same data without resampling.
    binned = 0.5 * (sino[:, :, 1:639:2] + sino[:, :, 2:640:2])  # (181, 2, 319)
    n = 295  # binned columns 0..294, centred on column 147
    offset = 147 - (binned.shape[-1] - 1) / 2.0  # -12 binned pixels (-24 raw)
    ours = fbp(binned, theta, shape=(n, 2, n), center_offset=offset)
    ref = np.stack([sk_iradon(binned[:, y, :n], theta) for y in range(2)], axis=1)
    inside = np.broadcast_to(disk_mask(n)[:, None, :], ref.shape)
    assert rel(ours[inside], ref[inside]) < 0.03
    assert np.corrcoef(ours[inside], ref[inside])[0, 1] > 0.999
    # enamel and dentin: the tooth is much denser than the surrounding air
    assert np.percentile(ours[inside], 99) > 20 * abs(np.median(ours[inside]))
    # the offset matters: the same data reconstructed about the detector middle is far off
    wrong = fbp(binned, theta, shape=(n, 2, n))
    assert rel(wrong[inside], ref[inside]) > 10 * rel(ours[inside], ref[inside])


def test_tomopy_reference_vectors():
    obj, proj, angle, ref_sirt, ref_gridrec = _load(
        "tomopy_vectors", "obj", "proj", "angle", "sirt", "gridrec_ramlak"
    )
    theta = -np.rad2deg(angle)  # TomoPy's angle sign is the opposite of ours (and scikit-image's)
    vol = np.ascontiguousarray(obj.transpose(1, 0, 2), dtype=np.float32)  # (Y, Z, X) -> (Z, Y, X)
    sino = forward_project(vol, theta, det_count=proj.shape[-1])
    assert rel(sino, proj) < 0.01
    # SIRT, 4 iterations from zero, as TomoPy's test ran it: same algorithm, different
    # discretisation
    rec = sirt(proj, theta, iterations=4, shape=(48, 8, 48))
    assert rel(rec, ref_sirt.transpose(1, 0, 2)) < 0.06
    # FBP vs gridrec (ramlak): same structure, and closer to the true block than gridrec itself
    truth = np.zeros((48, 8, 48), np.float32)
    truth[8:40, :, 8:40] = 1.0
    ours = fbp(proj, theta, shape=(48, 8, 48))
    grid = ref_gridrec.transpose(1, 0, 2)
    assert np.corrcoef(ours.ravel(), grid.ravel())[0, 1] > 0.95
    assert rel(ours, truth) < rel(grid, truth)


# -- devices --
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_cuda_matches_cpu():
    from factory.tomo import radon_backend

    rng = np.random.default_rng(6)
    vol = rng.random((32, 3, 32)).astype(np.float32)
    theta = np.linspace(-60, 60, 41)
    cpu = forward_project(vol, theta)
    with radon_backend.disabled():
        gpu = forward_project(torch.from_numpy(vol).cuda(), theta)
    assert gpu.is_cuda
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, rtol=1e-4, atol=1e-4)
    with radon_backend.disabled():
        rec = fbp(gpu, theta, shape=(32, 3, 32))
    np.testing.assert_allclose(rec.cpu().numpy(), fbp(cpu, theta, shape=(32, 3, 32)), atol=1e-4)
