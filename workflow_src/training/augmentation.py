"""Training-time augmentation of whole batches with tensor ops (the airbench pattern):
random translations and flips (Novak et al.), random crops and flips (Zhang et al.). Every
draw comes from the run's own generator, in a fixed order, so a batch's augmentation is a
pure function of that generator's state (train.py, ensemble.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nets.spec import CROP
from ..runtable import RunSpec

MAX_SHIFT = 4  # pixels; Novak et al.'s random translations


def random_crops(x: torch.Tensor, generator: torch.Generator, size: int = CROP) -> torch.Tensor:
    """A random size x size crop of every image of x (B, C, H, W), then horizontal flips:
    one offset pair and one flip decision per image, in that generator order."""
    b, _, h, w = x.shape
    dev = x.device
    top = torch.randint(0, h - size + 1, (b, 1), device=dev, generator=generator)
    left = torch.randint(0, w - size + 1, (b, 1), device=dev, generator=generator)
    flip = torch.rand(b, device=dev, generator=generator) < 0.5
    rows = top + torch.arange(size, device=dev)[None, :]  # (B, size)
    cols = left + torch.arange(size, device=dev)[None, :]
    batch = torch.arange(b, device=dev)[:, None, None]
    crops = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def augment_batch(run: RunSpec, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The run's augmentation of one training batch (none, translations, or crops)."""
    if run.augment == "crop":
        return random_crops(x, generator)
    return augment(x, generator) if run.augment else x


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translations by up to MAX_SHIFT px (zero fill) and horizontal flips.

    x: (B, C, H, W). One shift and one flip decision per image, applied with a gather.
    """
    return apply_augmentation(x, *draw_augmentation(x.shape[0], x.device, generator))


def draw_augmentation(b: int, device, generator: torch.Generator):
    """The random draws of ``augment`` for b images, in the generator order it uses:
    (dy, dx) of shape (B, 1) each, in [-MAX_SHIFT, MAX_SHIFT] px, then flip (B,) bool."""
    dy, dx = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2, b, 1), device=device,
                           generator=generator)
    flip = torch.rand(b, device=device, generator=generator) < 0.5
    return dy, dx, flip


def apply_augmentation(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                       flip: torch.Tensor) -> torch.Tensor:
    """out[i, :, r, c] = x[i, :, r + dy_i, c + dx_i] (zero outside), mirrored if flip_i."""
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (MAX_SHIFT,) * 4)  # (B, C, H+2s, W+2s)
    rows = torch.arange(h, device=dev)[None, :] + MAX_SHIFT + dy  # (B, H)
    cols = torch.arange(w, device=dev)[None, :] + MAX_SHIFT + dx  # (B, W)
    batch = torch.arange(b, device=dev)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    shifted = shifted.permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], shifted.flip(-1), shifted)
