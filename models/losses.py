"""The reference's loss: focal loss (α 1, γ 2) + soft multiclass Dice, with an ignore label.

Focal loss: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, ``FL = −α (1 − p_t)^γ
log p_t``, averaged over the annotated pixels. Soft Dice (Milletari et al., "V-Net", 3DV 2016): ``1
− (2 Σ p g + ε) / (Σ p + Σ g + ε)`` per class over the batch, averaged over classes. Pixels labelled
``ignore_index`` (−1: unannotated, e.g. sparse real labels) count in neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from schemas import IGNORE_INDEX


def _valid(target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        v = int(target[bad][0])
        raise ValueError(f"target: label {v} outside [0, {num_classes}) and not {ignore_index}")
    return valid


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 1.0,
    gamma: float = 2.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean focal loss over annotated pixels. logits (B, C, *spatial), target (B, *spatial) int
    (spatial: (H, W) or (S, H, W))."""
    valid = _valid(target, logits.shape[1], ignore_index)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(logits.float(), dim=1)
    t = target.clamp_min(0).long().unsqueeze(1)
    logp_t = logp.gather(1, t).squeeze(1)[valid]
    p_t = logp_t.exp()
    return (-alpha * (1.0 - p_t) ** gamma * logp_t).mean()


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    eps: float = 1.0,
) -> torch.Tensor:
    """1 − mean over classes of the soft Dice coefficient (pooled over the batch); shapes as
    :func:`focal_loss`."""
    num_classes = logits.shape[1]
    valid = _valid(target, num_classes, ignore_index)
    prob = F.softmax(logits.float(), dim=1)
    m = valid.unsqueeze(1).to(prob.dtype)
    onehot = F.one_hot(target.clamp_min(0).long(), num_classes).movedim(-1, 1).to(prob.dtype)
    prob, onehot = prob * m, onehot * m
    dims = (0, *range(2, prob.ndim))
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean()


class FocalDiceLoss(torch.nn.Module):
    """``focal + dice_weight · soft Dice`` (reference: α 1, γ 2, weight 1), ignoring −1."""

    def __init__(
        self,
        alpha: float = 1.0,
        gamma: float = 2.0,
        dice_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
    ):
        super().__init__()
        self.alpha, self.gamma, self.dice_weight = alpha, gamma, dice_weight
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fl = focal_loss(
            logits, target, alpha=self.alpha, gamma=self.gamma, ignore_index=self.ignore_index
        )
        if self.dice_weight == 0:
            return fl
        return fl + self.dice_weight * soft_dice_loss(
            logits, target, ignore_index=self.ignore_index
        )
