"""Convolutional networks: Zhang et al. 2017's small AlexNet and small Inception, and a WRN.

All three are built from a ``ModelSpec`` (workflow_src/nets/spec.py), take (B, C, H, W) inputs
and return (B, n_classes) logits. Inputs larger than 28 x 28 in both H and W (CIFAR-10/100,
SVHN: 32 x 32) are centre-cropped to 28 x 28 first, as in Zhang et al. ("28 x 28 centre
crops"); smaller inputs (MNIST/Fashion-MNIST 28 x 28, sklearn digits 8 x 8) are used as they
are. The nonlinearity is ``ACTIVATIONS[spec.activation]`` everywhere (the papers use ReLU).
Convolutions are initialised He-normal with zero biases and linear layers with PyTorch's
default, drawn in module order from the explicit generator, so the same (spec, seed) gives
bit-identical weights (``_CodedNet.reset_parameters`` says why not PyTorch's default for the
convolutions); batch norm starts at weight 1, bias 0. Networks are measured in eval mode, where
batch norm uses its running statistics and is a fixed per-channel affine map.

``alexnet_small`` (AlexNetSmall) - Zhang et al. 2017 (arXiv 1611.03530), appendix A, after the
TensorFlow CIFAR-10 tutorial: two modules of [conv 5x5, 64 channels, stride 1, 'same' ->
activation -> max-pool 3x3 stride 2 (padding 1) -> local response normalisation
(depth radius 4, i.e. window 9; alpha 0.001/9 in TF's convention = torch alpha 0.001;
beta 0.75; k 1)], then flatten -> linear 384 -> act -> linear 192 -> act -> linear n_classes.
On 3 x 28 x 28 inputs with 10 classes and biases: 1,387,786 parameters, the paper's count.

``inception_small`` (InceptionSmall) - Zhang et al. 2017, figure 3. Conv module = conv k x k
('same') -> [batch norm] -> activation; Inception(ch1, ch3) = concat[Conv 1x1 ch1, Conv 3x3
ch3]; Downsample(ch3) = concat[Conv 3x3 ch3 stride 2 (padding 1), max-pool 3x3 stride 2
(padding 1)]. Network: Conv 3x3 96 -> Inc(32,32) -> Inc(32,48) -> Down(80) -> Inc(112,48) ->
Inc(96,64) -> Inc(80,80) -> Inc(48,96) -> Down(96) -> Inc(176,160) -> Inc(176,160) -> global
mean pool -> linear n_classes. The paper's 1,649,402 parameters (3 x 28 x 28, 10 classes) are
exactly the conv weights and readout (1,647,690) plus ONE per-channel vector per Conv module
(1,712 channels in all). Conv bias + BN (gamma, beta) would give 1,652,826, conv bias + BN
beta (or no conv bias + BN gamma, beta) 1,651,114, neither bias nor BN 1,647,690. The convention
that reproduces the paper is TensorFlow's ``batch_norm`` default (``center=True,
scale=False``): with batch norm on, the conv has no bias (batch norm's mean subtraction would
cancel it) and batch norm has a learned shift beta but no scale gamma (ReLU is positively
homogeneous, the next layer absorbs any scale). So here:
  batch_norm=True,  bias=True  -> conv without bias, BN with beta only: 1,649,402 (exact);
  batch_norm=True,  bias=False -> conv without bias, BN without affine params: 1,647,680;
  batch_norm=False, bias=True  -> conv with bias, no BN: 1,649,402 (same count);
  batch_norm=False, bias=False -> 1,647,680 (bias=False also drops the readout's 10 biases).
The readout's bias follows spec.bias. Running statistics are buffers, not parameters.

``wrn`` (WideResNet) - pre-activation Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016,
arXiv 1605.07146), no dropout: conv 3x3 16 -> 3 groups of n = (d - 4)/6 basic blocks of
16k, 32k, 64k channels at strides 1, 2, 2 -> BN -> act -> global mean pool -> linear.
Block: BN -> act -> conv 3x3 (stride) -> BN -> act -> conv 3x3, plus the input, or a 1x1
strided conv of the pre-activated input where the shape changes (as in the authors' code).
``spec.depth`` is d (6n + 4) and ``spec.width`` is k. Batch norm (gamma and beta) is always on
and spec.batch_norm is ignored; following the published network, the convs have no bias
whatever spec.bias says, and spec.bias only sets the final linear layer's bias (published:
with). WRN-16-4, 3 x 28 x 28, 10 classes: 2,748,890 parameters (paper: 2.7M); WRN-28-10:
36,479,194 (paper: 36.5M). The count does not depend on the input size.

Activation codes (``activation_codes``, ``forward_with_codes``): Novak et al. 2018's code
c(x) generalised to CNNs, defined in workflow_src/nets/cnn_codes.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .cnn_codes import ActivationCodes
from .spec import ACTIVATIONS, CROP, ModelSpec
from ..runtable import MIN_CNN_SIDE, architecture_problem

MIN_SIDE = MIN_CNN_SIDE  # smallest input side accepted (sklearn digits): they downsample by 4


def centre_crop(x: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """The central size x size crop of (B, C, H, W) inputs larger than that in both H and W."""
    h, w = x.shape[-2:]
    if h > size and w > size:
        top, left = (h - size) // 2, (w - size) // 2
        x = x[..., top : top + size, left : left + size]
    return x


def _cropped_side(n: int, other: int) -> int:
    return CROP if (n > CROP and other > CROP) else n


def _pool_out(n: int) -> int:
    """Output side of a 3x3 stride-2 padding-1 max-pool or conv."""
    return (n + 2 - 3) // 2 + 1


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def input_problem(
    architecture: str, input_shape: tuple[int, int, int], width: int, depth: int
) -> str | None:
    """None if ``architecture`` can take inputs of ``input_shape`` at this width and depth,
    else a one-line message naming the problem and the fix."""
    if architecture not in CNN_ARCHITECTURES:
        return (
            f"architecture {architecture!r} is not one of {sorted(CNN_ARCHITECTURES)}; "
            "use one of those (or 'mlp' from models.py)"
        )
    if len(input_shape) != 3:
        return (
            f"{architecture} needs (C, H, W) inputs, got input_shape {tuple(input_shape)}; "
            "give image-shaped data"
        )
    # The checks the config runs when it is read (without torch), in one place.
    return architecture_problem(architecture, input_shape, width, depth)


class ShiftBatchNorm2d(nn.BatchNorm2d):
    """Batch norm without scale gamma, with an optional learned shift beta: TensorFlow's
    ``batch_norm`` default (center=True, scale=False). ``shift=False`` is a bare,
    non-affine batch norm."""

    def __init__(self, num_features: int, shift: bool = True):
        super().__init__(num_features, affine=False)
        if shift:
            self.bias = nn.Parameter(torch.zeros(num_features))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", shift={self.bias is not None}"


class _CodedNet(ActivationCodes, nn.Module):
    """Shared parts: seeded initialisation, the centre crop, and activation codes
    (``ActivationCodes``, workflow_src/nets/cnn_codes.py)."""

    spec: ModelSpec

    def _check(self, spec: ModelSpec, architecture: str) -> None:
        problem = input_problem(architecture, tuple(spec.input_shape), spec.width, spec.depth)
        if problem is not None:
            raise ValueError(problem)
        self.spec = spec

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """Drawn from ``generator`` in module order: convolutions He-normal (variance
        2 / fan_in, the ReLU-preserving scale) with zero biases; linear layers PyTorch's
        default; batch norm weight 1 (where it has one), bias 0, fresh running statistics.

        Why not PyTorch's default for the convolutions too: its variance 1 / (3 fan_in)
        shrinks the signal by about a third per ReLU layer, and inception_small without
        batch norm (11 conv modules deep) then stays at chance: on 50 Fashion-MNIST images,
        momentum 0.9 and rate 0.01, its loss did not move from ln 10 in 300 steps, where
        with He-normal it reached 94 % training accuracy in 200 (and with batch norm, 100 %
        in 40), the ordering of Zhang et al.'s Fig. 2."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                fan_in = m.weight[0].numel()
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) inputs -> (B, n_classes) logits."""
        return self._forward(centre_crop(x))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# --- AlexNet (small) -----------------------------------------------------------------


class AlexNetSmall(_CodedNet):
    """Zhang et al. 2017's small AlexNet (see the module docstring)."""

    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None):
        super().__init__()
        self._check(spec, "alexnet_small")
        act = ACTIVATIONS[spec.activation]
        c, h, w = spec.input_shape
        h, w = _cropped_side(h, w), _cropped_side(w, h)
        layers: list[nn.Module] = []
        for c_in in (c, 64):
            layers += [
                nn.Conv2d(c_in, 64, 5, stride=1, padding=2, bias=spec.bias),
                act(),
                nn.MaxPool2d(3, stride=2, padding=1),
                nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0),
            ]
            h, w = _pool_out(h), _pool_out(w)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * h * w, 384, bias=spec.bias),
            act(),
            nn.Linear(384, 192, bias=spec.bias),
            act(),
            nn.Linear(192, spec.n_classes, bias=spec.bias),
        )
        self.reset_parameters(generator)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --- Inception (small) ---------------------------------------------------------------


class ConvModule(nn.Module):
    """conv k x k ('same' padding) -> [batch norm] -> activation (Zhang et al., fig. 3).

    With batch norm the conv has no bias and batch norm has a shift but no scale (TF's
    default); without, the conv has the bias. Either way one per-channel shift iff bias."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, spec: ModelSpec):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2,
                              bias=spec.bias and not spec.batch_norm)
        self.bn = ShiftBatchNorm2d(c_out, shift=spec.bias) if spec.batch_norm else None
        self.act = ACTIVATIONS[spec.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class InceptionModule(nn.Module):
    def __init__(self, c_in: int, ch1: int, ch3: int, spec: ModelSpec):
        super().__init__()
        self.b1 = ConvModule(c_in, ch1, 1, 1, spec)
        self.b3 = ConvModule(c_in, ch3, 3, 1, spec)
        self.out_channels = ch1 + ch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x)], dim=1)


class DownsampleModule(nn.Module):
    def __init__(self, c_in: int, ch3: int, spec: ModelSpec):
        super().__init__()
        self.conv = ConvModule(c_in, ch3, 3, 2, spec)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = ch3 + c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


class InceptionSmall(_CodedNet):
    """Zhang et al. 2017's small Inception, figure 3 (see the module docstring)."""

    PLAN = (("inc", 32, 32), ("inc", 32, 48), ("down", 80),
            ("inc", 112, 48), ("inc", 96, 64), ("inc", 80, 80), ("inc", 48, 96), ("down", 96),
            ("inc", 176, 160), ("inc", 176, 160))

    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None):
        super().__init__()
        self._check(spec, "inception_small")
        layers: list[nn.Module] = [ConvModule(spec.input_shape[0], 96, 3, 1, spec)]
        c = 96
        for kind, *chs in self.PLAN:
            m = InceptionModule(c, *chs, spec) if kind == "inc" else DownsampleModule(c, *chs, spec)
            layers.append(m)
            c = m.out_channels
        self.features = nn.Sequential(*layers)
        self.readout = nn.Linear(c, spec.n_classes, bias=spec.bias)
        self.reset_parameters(generator)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x).mean(dim=(2, 3)))


# --- Wide ResNet ---------------------------------------------------------------------


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN -> act -> conv3x3(stride) -> BN -> act -> conv3x3."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = act()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = act()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            if (c_in != c_out or stride != 1) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.act1(self.bn1(x))
        y = self.conv2(self.act2(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(_CodedNet):
    """WRN-d-k, pre-activation, no dropout (see the module docstring)."""

    def __init__(self, spec: ModelSpec, generator: torch.Generator | None = None):
        super().__init__()
        self._check(spec, "wrn")
        act = ACTIVATIONS[spec.activation]
        n, k = (spec.depth - 4) // 6, spec.width
        layers: list[nn.Module] = [nn.Conv2d(spec.input_shape[0], 16, 3, padding=1, bias=False)]
        c = 16
        for c_out, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
            for i in range(n):
                layers.append(WideBasicBlock(c, c_out, stride if i == 0 else 1, act))
                c = c_out
        layers += [nn.BatchNorm2d(c), act()]
        self.features = nn.Sequential(*layers)
        self.readout = nn.Linear(c, spec.n_classes, bias=spec.bias)
        self.reset_parameters(generator)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x).mean(dim=(2, 3)))


CNN_ARCHITECTURES: dict[str, type[nn.Module]] = {
    "alexnet_small": AlexNetSmall,
    "inception_small": InceptionSmall,
    "wrn": WideResNet,
}
