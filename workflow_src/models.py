"""Fully connected networks as in Novak et al. 2018 (arXiv 1802.08760), §2.

Every activation is PyTorch's own definition. ``BREAKPOINTS`` lists where each
piecewise-linear activation changes its linear piece; the transition metrics (Novak §3.2)
use them to define a unit's activation code. ``tanh`` is smooth and has none.
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
    # The convolutional networks of workflow_src/cnns.py; "mlp" is the MLP below, for which
    # batch_norm is always False. For "wrn", width is the widen factor k and depth the
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


class MLP(nn.Module):
    """Input flattened, ``depth`` hidden layers of ``width`` units, then a linear readout."""

    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None):
        super().__init__()
        self.spec = spec
        sizes = [spec.input_dim] + [spec.width] * spec.depth
        self.hidden = nn.ModuleList(
            nn.Linear(a, b, bias=spec.bias) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.readout = nn.Linear(sizes[-1], spec.n_classes, bias=spec.bias)
        self.activation = ACTIVATIONS[spec.activation]()
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """PyTorch's default Linear initialisation, drawn from an explicit generator."""
        for layer in [*self.hidden, self.readout]:
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, d) inputs -> (B, n_classes) logits."""
        h = x.flatten(start_dim=1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.readout(h)

    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-activations of every hidden layer: ``depth`` tensors of shape (B, width)."""
        h = x.flatten(start_dim=1)
        out = []
        for layer in self.hidden:
            z = layer(h)
            out.append(z)
            h = self.activation(z)
        return out


def network_class(spec: ModelSpec) -> type[nn.Module]:
    """The module class of ``spec.architecture``: the MLP here, or a CNN of cnns.py."""
    if spec.architecture == "mlp":
        return MLP
    from .cnns import CNN_ARCHITECTURES  # imported only by jobs that build a CNN
    return CNN_ARCHITECTURES[spec.architecture]


def build_model(spec: ModelSpec, seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """A freshly initialised network; the same (spec, seed) gives the same weights."""
    generator = torch.Generator().manual_seed(seed)
    return network_class(spec)(spec, generator).to(device)


def is_mlp(model: nn.Module) -> bool:
    return model.spec.architecture == "mlp"


def save_model(model: nn.Module, path) -> None:
    """Weights and spec as plain tensors and Python values, loadable with weights_only=True."""
    spec = model.spec
    raw = {"input_shape": list(spec.input_shape), "n_classes": spec.n_classes,
           "width": spec.width, "depth": spec.depth, "activation": spec.activation,
           "bias": spec.bias}
    if spec.architecture != "mlp":  # an MLP's file stays as it always was
        raw.update(architecture=spec.architecture, batch_norm=spec.batch_norm)
    torch.save(
        {"spec": raw,
         # buffers too (batch norm's running statistics)
         "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
        path,
    )


def load_model(path, device: torch.device | str = "cpu") -> nn.Module:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    raw = dict(blob["spec"])
    raw["input_shape"] = tuple(raw["input_shape"])
    spec = ModelSpec(**raw)
    model = network_class(spec)(spec)
    model.load_state_dict(blob["state_dict"])
    # A saved network is measured, never trained on: eval mode (batch norm's running
    # statistics) wherever it is loaded.
    return model.to(device).eval()
