"""The stacked ensemble's building blocks (ensemble.py): torch.optim's update rules for
every member (row) of stacked parameters at once, and the MLP's forward pass with each
member's own parameters, as batched matmuls."""

from __future__ import annotations

import torch

from ..nets.models import ACTIVATIONS, MLP, ModelSpec

STACKABLE_OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop", "gd")
# The state slots each update rule keeps per parameter (StackedOptimizer.state's keys).
OPTIMIZER_SLOTS = {"sgd": (), "gd": (), "momentum": ("momentum_buffer",),
                   "adam": ("exp_avg", "exp_avg_sq"), "rmsprop": ("square_avg",)}
# torch.optim's defaults, which train.make_optimizer uses.
MOMENTUM = 0.9
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
RMSPROP_ALPHA, RMSPROP_EPS = 0.99, 1e-8


class StackedOptimizer:
    """torch.optim's update rule for every member (row) of stacked parameters at once.

    ``lr`` is (K,): one learning rate per member. The formulas follow torch's single-tensor
    implementations step for step: SGD; SGD with momentum 0.9 (dampening 0, no Nesterov,
    first buffer = first gradient); Adam (betas (0.9, 0.999), eps 1e-8, bias-corrected,
    eps added after the square root); RMSprop (alpha 0.99, eps 1e-8, not centred).
    All members take their updates together, so one update count serves them all.
    """

    def __init__(self, kind: str, lr: torch.Tensor):
        if kind not in STACKABLE_OPTIMIZERS:
            raise ValueError(f"optimizer {kind!r} is not one of {STACKABLE_OPTIMIZERS}")
        self.kind, self.lr, self.updates = kind, lr, 0
        self.state: dict[tuple[str, str], torch.Tensor] = {}  # (parameter, slot) -> (K, ...)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        self.updates += 1
        rule = {"sgd": self._sgd, "gd": self._sgd, "momentum": self._momentum,
                "adam": self._adam, "rmsprop": self._rmsprop}[self.kind]
        for name, param in params.items():
            lr = self.lr.view(-1, *[1] * (param.dim() - 1))  # (K, 1, ...) against (K, ...)
            param.sub_(rule(name, grads[name], lr))

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these members (rows), e.g. when others stop."""
        self.lr = self.lr[rows]
        self.state = {key: value[rows] for key, value in self.state.items()}

    def _sgd(self, name, grad, lr):
        return lr * grad

    def _momentum(self, name, grad, lr):
        buf = self.state.get((name, "momentum_buffer"))
        buf = grad.clone() if buf is None else buf.mul_(MOMENTUM).add_(grad)
        self.state[(name, "momentum_buffer")] = buf
        return lr * buf

    def _adam(self, name, grad, lr):
        beta1, beta2 = ADAM_BETAS
        exp_avg = self.state.setdefault((name, "exp_avg"), torch.zeros_like(grad))
        exp_avg_sq = self.state.setdefault((name, "exp_avg_sq"), torch.zeros_like(grad))
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.updates
        bias_correction2 = 1 - beta2 ** self.updates
        denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(ADAM_EPS)
        return (lr / bias_correction1) * exp_avg / denom

    def _rmsprop(self, name, grad, lr):
        square_avg = self.state.setdefault((name, "square_avg"), torch.zeros_like(grad))
        square_avg.mul_(RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - RMSPROP_ALPHA)
        return lr * grad / square_avg.sqrt().add_(RMSPROP_EPS)


def stack_parameters(models: list[MLP]) -> dict[str, torch.Tensor]:
    """name -> parameter of every model stacked on a new first axis, as leaves for autograd."""
    return {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
            .requires_grad_() for name, _ in models[0].named_parameters()}


def stacked_forward(params: dict[str, torch.Tensor], spec: ModelSpec,
                    x: torch.Tensor) -> torch.Tensor:
    """MLP.forward for every member: x (K, B, C, H, W) or (K, B, d) -> logits (K, B, classes),
    member k with its own parameters params[name][k]."""
    activation = ACTIVATIONS[spec.activation]()
    h = x.flatten(start_dim=2)
    for layer in [f"hidden.{i}" for i in range(spec.depth)]:
        h = activation(_linear(h, params, layer))
    return _linear(h, params, "readout")


def _linear(h: torch.Tensor, params: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    weight_t = params[f"{layer}.weight"].transpose(1, 2)  # (K, in, out)
    bias = params.get(f"{layer}.bias")  # (K, out) or None
    if bias is None:
        return torch.bmm(h, weight_t)
    return torch.baddbmm(bias[:, None, :], h, weight_t)
