"""The SimAQ 2.5D U-Net and a plain 2D U-Net baseline.

All take a stack of slices ``x`` of shape (B, S, H, W) (S odd, the slices ±S//2 around the target)
and, except the 3D U-Net, return class logits (B, C, H, W) for the centre slice.

* :class:`UNet25D` (Egebjerg & Wüstner, arXiv 2508.10821): encoder blocks of two Conv3d 3×3×3 +
  BatchNorm + PReLU over the whole stack with 2D-only (1×2×2) pooling, so the stack depth S is kept
  at every level; skip connections and the bottleneck hand over their centre slice; the decoder is
  2D (transposed-conv upsampling, two Conv2d 3×3 + BatchNorm + PReLU); a 1×1 conv gives one logit
  per class.
* :class:`UNet2D`: the same encoder/decoder in 2D on the centre slice only.
* :class:`UNetStack2D`: the 2D U-Net with the S slices of the stack as its S input channels (the
  channel-stacked "2.5D" input of many medical-imaging U-Nets). Only the first convolution sees
  the stack, so a step costs about what :class:`UNet2D` costs; on a 2-core CPU it is 6× cheaper than
  :class:`UNet25D` of the same width (``python bench/unet_cost.py``).
* :class:`UNetStack2DDense`: :class:`UNetStack2D` with a logit for every slice of the stack, (B, C,
  S, H, W): a *dense* model (:func:`is_dense`) for the price of the centre-slice one.
* :class:`UNet3D` (Çiçek et al., "3D U-Net", MICCAI 2016): 3D convolutions and 2×2×2 pooling
  throughout; the stack is a 3D patch and *every* slice of it is segmented: it returns logits
  (B, C, S, H, W) (a *dense* model, :func:`is_dense`), so a step supervises S times the voxels
  of a centre-slice model and the surfaces see their 3D neighbourhood.

``features`` channels at the first level, doubled per level; ``depth`` resolution levels (depth − 1
poolings). Inputs whose H, W (and, in 3D, S) are not multiples of 2**(depth−1) are zero-padded and
the output cropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int, ndim: int) -> nn.Sequential:
    """Two 3×3 (2D) or 3×3×3 (3D) convolutions, each followed by BatchNorm and PReLU."""
    conv, norm = (nn.Conv3d, nn.BatchNorm3d) if ndim == 3 else (nn.Conv2d, nn.BatchNorm2d)
    return nn.Sequential(
        conv(cin, cout, 3, padding=1, bias=False),
        norm(cout),
        nn.PReLU(cout),
        conv(cout, cout, 3, padding=1, bias=False),
        norm(cout),
        nn.PReLU(cout),
    )


class _Decoder2D(nn.Module):
    """2D decoder: upsample, concatenate the skip, two convs; then 1×1 conv to class logits."""

    def __init__(self, widths: list[int], num_classes: int):
        super().__init__()
        self.up = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for lvl in range(len(widths) - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(widths[lvl], widths[lvl - 1], 2, stride=2))
            self.blocks.append(_block(2 * widths[lvl - 1], widths[lvl - 1], 2))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, bottom: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = bottom
        for up, block, skip in zip(self.up, self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class _UNetBase(nn.Module):
    dense = False  # True: logits for every slice of the stack, not only its centre

    def __init__(self, num_classes: int, window: int, features: int, depth: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: need at least 2, got {num_classes}")
        if window < 1 or (window % 2 != 1 and not self.dense):
            raise ValueError(f"window: must be a positive odd number, got {window}")
        if features < 1 or depth < 1:
            raise ValueError(f"features/depth: must be >= 1, got {features}/{depth}")
        self.num_classes, self.window, self.features, self.depth = (
            num_classes,
            window,
            features,
            depth,
        )
        self.widths = [features * 2**i for i in range(depth)]
        self.multiple = 2 ** (depth - 1)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.window:
            raise ValueError(
                f"input: expected (B, {self.window}, H, W) slice stacks, got {tuple(x.shape)}"
            )

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return x, h, w

    def _encode(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``self.enc`` with ``self.pool`` between levels: (bottom, skips from the top)."""
        skips = []
        for i, block in enumerate(self.enc):
            y = block(y)
            if i < len(self.enc) - 1:
                skips.append(y)
                y = self.pool(y)
        return y, skips

    def _pad3(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the last three axes of ``x`` to multiples of 2**(depth−1)."""
        s, h, w = x.shape[-3:]
        m = self.multiple
        return F.pad(x, (0, (-w) % m, 0, (-h) % m, 0, (-s) % m))


class UNet25D(_UNetBase):
    """2.5D U-Net: 3D encoder over the slice stack, centre-slice skips, 2D decoder (see module)."""

    def __init__(self, num_classes: int, window: int = 7, features: int = 64, depth: int = 4):
        super().__init__(num_classes, window, features, depth)
        cins = [1, *self.widths[:-1]]
        self.enc = nn.ModuleList(_block(a, b, 3) for a, b in zip(cins, self.widths, strict=True))
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.dec = _Decoder2D(self.widths, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x, h, w = self._pad(x)
        c = self.window // 2
        y = x.unsqueeze(1)  # (B, 1, S, H, W)
        skips = []
        for i, block in enumerate(self.enc):
            y = block(y)
            if i < len(self.enc) - 1:
                skips.append(y[:, :, c])
                y = self.pool(y)
        return self.dec(y[:, :, c], skips)[..., :h, :w]


class UNet2D(_UNetBase):
    """Plain 2D U-Net on the centre slice of the stack (the baseline)."""

    in_slices = 1  # input channels taken from the stack: its centre slice

    def __init__(self, num_classes: int, window: int = 7, features: int = 64, depth: int = 4):
        super().__init__(num_classes, window, features, depth)
        cins = [self.window if self.in_slices is None else self.in_slices, *self.widths[:-1]]
        self.enc = nn.ModuleList(_block(a, b, 2) for a, b in zip(cins, self.widths, strict=True))
        self.pool = nn.MaxPool2d(2)
        self.dec = _Decoder2D(self.widths, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x, h, w = self._pad(x)
        c = self.window // 2
        y, skips = self._encode(x if self.in_slices is None else x[:, c : c + 1])
        return self.dec(y, skips)[..., :h, :w]


class UNetStack2D(UNet2D):
    """2D U-Net whose input channels are the stack's S slices (see module)."""

    in_slices = None  # all of the stack


class UNetStack2DDense(UNetStack2D):
    """:class:`UNetStack2D` with C × S output channels: logits (B, C, S, H, W) for every slice of
    the stack (a dense model, like :class:`UNet3D`), so a step supervises S times the voxels at
    almost the same cost (only the 1×1 head grows); inference averages the overlapping stacks."""

    dense = True

    def __init__(self, num_classes: int, window: int = 7, features: int = 64, depth: int = 4):
        super().__init__(num_classes, window, features, depth)
        self.dec = _Decoder2D(self.widths, num_classes * window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).unflatten(1, (self.num_classes, self.window))


class UNet3D(_UNetBase):
    """3D U-Net over the whole stack: logits (B, C, S, H, W) for every slice (see module).

    ``window`` is the patch depth S (any size; even sizes pool without padding).
    """

    dense = True

    def __init__(self, num_classes: int, window: int = 16, features: int = 16, depth: int = 4):
        super().__init__(num_classes, window, features, depth)
        wd = self.widths
        self.enc = nn.ModuleList(_block(a, b, 3) for a, b in zip([1, *wd[:-1]], wd, strict=True))
        self.pool = nn.MaxPool3d(2)
        levels = range(len(wd) - 1, 0, -1)
        self.up = nn.ModuleList(nn.ConvTranspose3d(wd[i], wd[i - 1], 2, stride=2) for i in levels)
        self.dec = nn.ModuleList(_block(2 * wd[i - 1], wd[i - 1], 3) for i in levels)
        self.head = nn.Conv3d(wd[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        s, h, w = x.shape[-3:]
        y, skips = self._encode(self._pad3(x.unsqueeze(1)))  # from (B, 1, S, H, W)
        for up, block, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            y = block(torch.cat([up(y), skip], dim=1))
        return self.head(y)[..., :s, :h, :w]


MODELS = {
    "unet25d": UNet25D,
    "unet2d": UNet2D,
    "stack2d": UNetStack2D,
    "stack2d-dense": UNetStack2DDense,
    "unet3d": UNet3D,
}


def is_dense(name: str) -> bool:
    """True if the model ``name`` segments every slice of its stack (its labels are stacks)."""
    return MODELS[name].dense


def build_model(
    name: str, num_classes: int, *, window: int, features: int, depth: int
) -> nn.Module:
    """The network called ``name`` (``unet25d``, ``unet2d``, ``stack2d``, ``stack2d-dense`` or
    ``unet3d``)."""
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r} (known: {sorted(MODELS)})")
    return MODELS[name](num_classes, window=window, features=features, depth=depth)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Adam parameter groups: weight decay on conv weights only (none on PReLU, bias, norm)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
