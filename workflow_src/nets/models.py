"""Fully connected networks as in Novak et al. 2018 (arXiv 1802.08760), §2, and building,
saving and loading a network of any architecture (the MLP here, the CNNs of cnns.py).

``ModelSpec``, ``ACTIVATIONS`` and ``BREAKPOINTS`` are defined in workflow_src/nets/spec.py
and importable from here.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .cnns import CNN_ARCHITECTURES
from .spec import ACTIVATIONS, BREAKPOINTS, ModelSpec

__all__ = ["ACTIVATIONS", "BREAKPOINTS", "MLP", "ModelSpec", "build_model", "is_mlp",
           "load_model", "network_class", "save_model"]


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
    return CNN_ARCHITECTURES[spec.architecture]


def build_model(spec: ModelSpec, seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """A freshly initialised network; the same (spec, seed) gives the same weights."""
    generator = torch.Generator().manual_seed(seed)
    return network_class(spec)(spec, generator).to(device)


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` in eval mode, for metrics computed in double precision
    (the model itself is left as it is)."""
    return copy.deepcopy(model).double().eval()


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
