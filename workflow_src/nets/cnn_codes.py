"""Activation codes of the convolutional networks (workflow_src/nets/cnns.py).

Novak et al. 2018's code c(x) (arXiv 1802.08760, §3.2) generalised to CNNs. For every unit
of every activation layer (each channel and spatial position) the number of
``BREAKPOINTS[spec.activation]`` strictly below its pre-activation, and for every max-pool
output unit the position (0 .. 8, row-major) of its argmax within its 3 x 3 window; flattened
per layer and concatenated in execution order to (B, U) int16 codes. Eval-mode batch norm is
affine and contributes nothing; so does the global mean pool. For inception_small and wrn
with a piecewise-linear activation the network is affine on each region of constant code
(these are its linear regions). LRN is smooth and contributes nothing either, so for
alexnet_small the regions are only regions of fixed activation/max-pool pattern, and the
network is not affine on them. tanh has no breakpoints: ValueError.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .spec import ACTIVATIONS, ModelSpec, breakpoints


class ActivationCodes:
    """The codes of an ``nn.Module`` with a ``spec`` (a ModelSpec), recorded by forward hooks
    on its activation modules (of class ``ACTIVATIONS[spec.activation]``) and max-pools."""

    spec: ModelSpec

    @contextmanager
    def _recording(self, codes: list[torch.Tensor]):
        act_cls = ACTIVATIONS[self.spec.activation]
        bp = breakpoints(self.spec.activation, torch.float64, "cpu")  # tanh: raise first

        def act_hook(module, inputs, output):
            pre = inputs[0]
            codes.append(torch.bucketize(pre, bp.to(pre), right=False)
                         .flatten(1).to(torch.int16))

        def pool_hook(module, inputs, output):
            codes.append(pool_window_argmax(module, inputs[0]).flatten(1))

        handles = []
        for m in self.modules():
            if type(m) is act_cls:
                handles.append(m.register_forward_hook(act_hook))
            elif isinstance(m, nn.MaxPool2d):
                handles.append(m.register_forward_hook(pool_hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward_with_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and (B, U) int16 activation codes from one and the same forward pass, in
        the network's current mode (eval for measurement)."""
        codes: list[torch.Tensor] = []
        with self._recording(codes):
            logits = self(x)
        return logits, torch.cat(codes, dim=1)

    @torch.no_grad()
    def activation_codes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, U) int16 activation codes (see the module docstring). The pass runs in eval
        mode (batch norm with running statistics, so each point's code is its own); the
        previous mode is restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            return self.forward_with_codes(x)[1]
        finally:
            self.train(was_training)


def pool_window_argmax(pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """For each output of ``pool`` on ``x``, the row-major position of its argmax within its
    window, as int16 (B, C, H_out, W_out)."""
    k, s, p = (pool.kernel_size, pool.stride, pool.padding)
    if not all(isinstance(v, int) for v in (k, s, p)) or pool.dilation != 1:
        raise NotImplementedError("codes need square, undilated max-pools")
    _, idx = F.max_pool2d(x, k, s, p, ceil_mode=pool.ceil_mode, return_indices=True)
    w_in = x.shape[-1]
    row, col = idx // w_in, idx % w_in
    h_out, w_out = idx.shape[-2:]
    top = torch.arange(h_out, device=x.device).view(-1, 1) * s - p
    left = torch.arange(w_out, device=x.device).view(1, -1) * s - p
    return ((row - top) * k + (col - left)).to(torch.int16)
