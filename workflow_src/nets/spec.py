"""What fixes a network's architecture (``ModelSpec``) and its activation's linear pieces.

Every activation is PyTorch's own definition. ``BREAKPOINTS`` lists where each
piecewise-linear activation changes its linear piece; the transition metrics (Novak et al.
2018, arXiv 1802.08760, §3.2) use them to define a unit's activation code. ``tanh`` is smooth
and has none. The MLP (nets/models.py) and the CNNs (nets/cnns.py) are both built from a
``ModelSpec``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hard_tanh": nn.Hardtanh,
    "hard_sigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
}

# Pixels: Zhang et al.'s crop of CIFAR-sized inputs. The CNNs centre-crop larger inputs to
# it (nets/cnns.py) and training's random crops take it (training/augmentation.py).
CROP = 28

# Pre-activation values at which the activation switches linear piece.
BREAKPOINTS: dict[str, tuple[float, ...]] = {
    "relu": (0.0,),
    "relu6": (0.0, 6.0),
    "hard_tanh": (-1.0, 1.0),
    "hard_sigmoid": (-3.0, 3.0),
    "tanh": (),
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes a network's architecture."""

    input_shape: tuple[int, ...]  # (C, H, W) of one input
    n_classes: int
    width: int  # units per hidden layer
    depth: int  # number of hidden layers
    activation: str
    bias: bool = True
    # The convolutional networks of workflow_src/nets/cnns.py; "mlp" is the MLP of models.py, for
    # which batch_norm is always False. For "wrn", width is the widen factor k and depth the
    # WRN depth 6n + 4; alexnet_small and inception_small have their published sizes and
    # width = depth = 0.
    architecture: str = "mlp"
    batch_norm: bool = False

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}"
            )

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)


def breakpoints(activation: str, dtype, device) -> torch.Tensor:
    """Sorted breakpoints of ``activation`` as a (P,) tensor; a smooth activation (tanh) has
    none and is refused: activation codes are undefined for it."""
    if not BREAKPOINTS[activation]:
        raise ValueError(
            f"activation {activation!r} is smooth: it has no breakpoints between linear "
            f"pieces, so activation codes and the transitions they define (Novak §3.2) are "
            f"undefined; use a piecewise-linear activation, one of "
            f"{sorted(k for k, v in BREAKPOINTS.items() if v)}"
        )
    return torch.tensor(sorted(BREAKPOINTS[activation]), dtype=dtype, device=device)
