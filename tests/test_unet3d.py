"""The dense models (``model=unet3d``, ``stack2d-dense``): every slice of a stack is a target, in the network, the
loss, the training stream and the overlap-averaged inference; trained and used through the CLI
(with flip test-time augmentation, ``--tta``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run

# --- network and loss -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["unet3d", "stack2d-dense"])
def test_dense_models_segment_every_slice_and_see_across_slices(name):
    import torch

    from models.unet import build_model, is_dense

    assert is_dense(name) and not is_dense("stack2d")
    torch.manual_seed(0)
    net = build_model(name, 4, window=6, features=4, depth=3).eval()
    x = torch.randn(2, 6, 20, 28)  # S, H, W not multiples of 2**(depth-1): padded, then cropped
    x2 = x.clone()
    x2[:, 0] += 1.0  # change the first slice only
    with torch.no_grad():
        a, b = net(x), net(x2)
    assert a.shape == (2, 4, 6, 20, 28)
    assert not torch.allclose(a[:, :, 3], b[:, :, 3])  # another slice's output sees the change


def test_loss_on_label_stacks_ignores_unannotated_voxels():
    import torch

    from models.losses import FocalDiceLoss

    logits = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 8, 8))
    target[:, 1] = -1  # one unannotated slice of each stack
    FocalDiceLoss()(logits, target).backward()
    assert torch.all(logits.grad[:, :, 1] == 0) and torch.any(logits.grad[:, :, 2] != 0)
    perfect = torch.nn.functional.one_hot(target.clamp_min(0), 3).movedim(-1, 1) * 50.0
    assert float(FocalDiceLoss()(perfect.float(), target)) < 1e-3


def test_training_config_allows_even_windows_only_for_dense_models():
    from factory.errors import ConfigError
    from models.config import parse_train_config

    assert parse_train_config(sets=["model=unet3d", "window=16"]).window == 16
    assert parse_train_config(sets=["model=stack2d-dense", "window=6"]).window == 6
    with pytest.raises(ConfigError, match="window: .*must be odd"):
        parse_train_config(sets=["model=stack2d", "window=16"])


# --- stacks and augmentation ----------------------------------------------------------------------


def test_label_stacks_line_up_with_image_stacks_on_every_axis():
    from models.data import kept_centres, label_stack, slice_stack, stack_target

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (9, 10, 11))
    vol = lab.astype(np.float32)
    for axis in range(3):
        for centre, window in ((0, 4), (4, 5), (lab.shape[axis] - 1, 6)):  # mirrored at both ends
            x = slice_stack(vol, centre, axis, window)
            y = label_stack(lab, centre, axis, window)
            assert x.shape == y.shape and x.shape[0] == window and np.array_equal(x, y)
            assert stack_target(lab, centre, axis, window, dense=False).shape == x.shape[1:]
    # a centre whose own slice is background is kept when its stack holds a cell
    lab = np.zeros((12, 6, 6), int)
    lab[2, 3, 3] = 1
    g = np.random.default_rng(1)
    assert 4 not in kept_centres(lab, axis=0, rng=g, background_keep=0.0)
    g = np.random.default_rng(1)
    assert 4 in kept_centres(lab, axis=0, rng=g, background_keep=0.0, window=6)


def test_augmentations_move_image_and_label_stacks_together():
    import torch

    from models.config import AugmentConfig
    from models.data import augment_batch

    y = torch.randint(0, 4, (6, 3, 24, 20))
    x = y.float()
    off = {k: 0.0 for k in AugmentConfig.model_fields if k.endswith("_p")}
    cfg = AugmentConfig(**{**off, "flip_p": 0.5, "elastic_p": 1.0, "crop_p": 1.0})
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert ya.shape == y.shape and not torch.equal(ya, y)
    # images are resampled bilinearly, labels by nearest neighbour: they agree wherever the
    # bilinear value is (near) an integer, which is most pixels of a piecewise-constant image
    agree = (xa.round().long() == ya).float().mean()
    assert float(agree) > 0.6


# --- inference ------------------------------------------------------------------------------------


class _Oracle:
    """A stand-in dense network: logits that pick the class stored in the image (exact)."""

    dense = True

    def __init__(self, ncls: int):
        self.ncls = ncls

    def eval(self):
        return self

    def __call__(self, x):
        import torch

        return torch.nn.functional.one_hot(x.round().long(), self.ncls).movedim(-1, 1) * 20.0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_dense_inference_tiles_every_slice_once_or_more(axis):
    from models.infer import dense_starts, predict_slices, predict_volume

    for n, window in ((16, 16), (17, 16), (30, 7), (9, 2)):
        starts = dense_starts(n, window)
        covered = np.zeros(n, int)
        for s in starts:
            covered[s : s + window] += 1
        assert covered.min() >= 1 and starts[-1] == n - window
    rng = np.random.default_rng(axis)
    lab = rng.integers(0, 3, (19, 13, 15)).astype(np.uint8)
    vol = lab.astype(np.float32)
    window = 6
    probs = predict_volume(_Oracle(3), vol, axis=axis, window=window)
    assert probs.shape == (3, *lab.shape)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(probs.argmax(0), lab)
    labels = predict_volume(_Oracle(3), vol, axis=axis, window=window, probabilities=False)
    assert np.array_equal(labels, lab)
    centres = np.array([0, 5, lab.shape[axis] - 1])
    got = predict_slices(_Oracle(3), vol, centres, axis=axis, window=window)
    assert np.array_equal(got, np.moveaxis(np.take(lab, centres, axis=axis), axis, 0))


class _FlipProbe:
    """A stand-in centre-slice network whose output depends on where a pixel lies (not flip
    equivariant): TTA must average the four flips' outputs, mapped back."""

    dense = False

    def eval(self):
        return self

    def __call__(self, x):
        import torch

        b, _, h, w = x.shape
        ramp = torch.linspace(0, 1, w).expand(b, h, w)
        return torch.stack([x[:, x.shape[1] // 2], ramp], dim=1)


def test_flip_tta_averages_the_four_flips_mapped_back():
    from models.infer import predict_volume

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(5, 6, 7)).astype(np.float32)
    plain = predict_volume(_FlipProbe(), vol, axis=0, window=3)
    tta = predict_volume(_FlipProbe(), vol, axis=0, window=3, tta=True)
    flipped = [
        np.flip(predict_volume(_FlipProbe(), np.ascontiguousarray(np.flip(vol, f)), axis=0,
                               window=3), tuple(a + 1 for a in f))
        for f in ((), (1,), (2,), (1, 2))
    ]  # fmt: skip
    assert np.allclose(tta, sum(flipped) / 4, atol=1e-6)
    assert not np.allclose(tta, plain)  # the ramp channel is not flip-equivariant
    # still probabilities
    assert np.allclose(tta.sum(0), 1.0, atol=1e-5)


# --- through the CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "window"), [("unet3d", 8), ("stack2d-dense", 5)])
def test_dense_models_train_evaluate_and_segment_through_the_cli(
    name, window, monkeypatch, capsys, ray_session, small_dataset, tmp_path
):
    import mrcfile
    from _models_helpers import split_samples

    run_dir = tmp_path / "run3d"
    args = ["train", "--data", str(small_dataset), "--out", str(run_dir), "--seed", "3"]
    args += ["--set", f"model={name}", "--set", f"window={window}", "--set", "features=4"]
    args += ["--set", "depth=2", "--batch-size", "2", "--lr", "0.01", "--epochs", "1"]
    args += ["--steps-per-epoch", "4", "--set", "val_slices=8", "--set", "cpus_per_worker=1"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    state = json.loads((run_dir / "run.json").read_text())
    assert state["arch"]["model"] == name and state["arch"]["window"] == window

    code, out, err = run(
        monkeypatch, capsys, "evaluate", "--model", str(run_dir), "--data", str(small_dataset),
        "--split", "test", "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert code == 0, err
    scores = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert scores["classes"][0] == "background" and set(scores["pooled"]) == set(scores["classes"])

    vol = split_samples(small_dataset, "test")[0]["recon"].astype(np.float32)
    src = tmp_path / "tomo.mrc"
    with mrcfile.new(str(src)) as m:
        m.set_data(vol)
        m.voxel_size = 60.0 * 10  # Å
    out_tif = tmp_path / "seg" / "labels.tif"
    code, out, err = run(
        monkeypatch, capsys, "segment", str(src), "--model", str(run_dir), "--out", str(out_tif),
        "--no-progress", "--tta",
    )  # fmt: skip
    assert code == 0, err
    import tifffile

    seg = tifffile.imread(out_tif)
    assert seg.shape == vol.shape and seg.max() < len(scores["classes"])
    assert json.loads(out_tif.with_suffix(".json").read_text())["tta"] is True

    code, out, err = run(
        monkeypatch, capsys, "evaluate", "--model", str(run_dir), "--data", str(small_dataset),
        "--split", "test", "--tta", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["model"]["tta"] is True
