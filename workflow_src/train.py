"""Stage 3: train one network until it fits its training set or runs out of steps.

The whole dataset sits on the device as one tensor; a batch is a slice of a ``randperm``
drawn from the run's own generator, and augmentation works on whole batches with tensor
ops (the airbench pattern). A network that misses the target accuracy is kept and marked
``unconverged``; a non-finite loss stops it as ``diverged`` without stopping the study.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import xarray as xr

from .models import MLP, ModelSpec, build_model
from .runtable import RunSpec

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop", "gd")
MAX_SHIFT = 4  # pixels; Novak et al.'s random translations
EVAL_CHUNK = 4096  # points per forward pass when evaluating a whole split


@dataclass
class TrainResult:
    status: str  # converged | unconverged | diverged
    steps: int
    train_acc: float  # on the training set as the network saw it (corrupted labels included)
    test_acc: float
    train_loss: float
    seconds: float
    curve: list[dict] = field(default_factory=list)  # step, train_loss, train_acc, test_acc, seconds

    @property
    def gap(self) -> float:
        return self.train_acc - self.test_acc


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; use 'auto'")
    return torch.device(requested)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name in ("sgd", "gd"):  # gd is plain SGD on full batches
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"optimizer {name!r} is not one of {OPTIMIZERS}")


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translations by up to MAX_SHIFT px (zero fill) and horizontal flips.

    x: (B, C, H, W). One shift and one flip decision per image, applied with a gather.
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (MAX_SHIFT,) * 4)  # (B, C, H+2s, W+2s)
    dy, dx = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2, b, 1), device=dev, generator=generator)
    rows = torch.arange(h, device=dev)[None, :] + MAX_SHIFT + dy  # (B, H)
    cols = torch.arange(w, device=dev)[None, :] + MAX_SHIFT + dx  # (B, W)
    batch = torch.arange(b, device=dev)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    shifted = shifted.permute(0, 3, 1, 2)
    flip = torch.rand(b, device=dev, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], shifted.flip(-1), shifted)


@torch.no_grad()
def evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a whole split, in chunks."""
    total_loss, total_correct = 0.0, 0
    for start in range(0, x.shape[0], EVAL_CHUNK):
        logits = model(x[start:start + EVAL_CHUNK])
        yb = y[start:start + EVAL_CHUNK]
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        total_correct += (logits.argmax(1) == yb).sum().item()
    return total_loss / x.shape[0], total_correct / x.shape[0]


def model_spec_for(run: RunSpec, data: xr.Dataset) -> ModelSpec:
    return ModelSpec(
        input_shape=tuple(data["x_train"].shape[1:]), n_classes=int(data.attrs["n_classes"]),
        width=run.width, depth=run.depth, activation=run.activation, bias=run.bias,
    )


def train(run: RunSpec, data: xr.Dataset, device: torch.device, log=print) -> tuple[MLP, TrainResult]:
    """Train the network of ``run`` on ``data`` (a corrupted dataset from stage 2)."""
    x_train = torch.as_tensor(data["x_train"].values, device=device)  # (N, C, H, W)
    y_train = torch.as_tensor(data["y_train"].values, device=device)  # (N,)
    x_test = torch.as_tensor(data["x_test"].values, device=device)
    y_test = torch.as_tensor(data["y_test"].values, device=device)
    model = build_model(model_spec_for(run, data), seed=run.seed, device=device)
    optimizer = make_optimizer(run.optimizer, model.parameters(), run.learning_rate)
    # The batch-order stream is separate from the initialisation stream (seeded on the CPU).
    generator = torch.Generator(device=device).manual_seed(run.seed + 1_000_003)
    n, batch_size = x_train.shape[0], min(run.batch_size, x_train.shape[0])
    start, step, status = time.perf_counter(), 0, "unconverged"
    # Step 0 is the initial network (its loss is about ln K), where learning curves start;
    # the stopping rule is checked from the first evaluation after an update.
    curve = [_checkpoint(model, x_train, y_train, x_test, y_test, 0, start)]
    order, cursor = torch.randperm(n, device=device, generator=generator), 0
    while step < run.max_steps:
        if cursor + batch_size > n:  # new epoch: drop the ragged tail, reshuffle
            order, cursor = torch.randperm(n, device=device, generator=generator), 0
        idx = order[cursor:cursor + batch_size]
        cursor += batch_size
        xb = augment(x_train[idx], generator) if run.augment else x_train[idx]
        loss = F.cross_entropy(model(xb), y_train[idx])
        step += 1
        if not torch.isfinite(loss):
            status = "diverged"
            log(f"step {step}: non-finite loss {loss.item()}; stopping as diverged")
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % run.eval_every == 0 or step == run.max_steps:
            point = _checkpoint(model, x_train, y_train, x_test, y_test, step, start)
            curve.append(point)
            log(f"step {step}: train loss {point['train_loss']:.4g}, train acc "
                f"{point['train_acc']:.4f}, test acc {point['test_acc']:.4f}")
            if not math.isfinite(point["train_loss"]):
                status = "diverged"
                break
            if point["train_acc"] >= run.target_train_acc:
                status = "converged"
                break
    final = _checkpoint(model, x_train, y_train, x_test, y_test, step, start)
    if curve[-1]["step"] != step:
        curve.append(final)
    if status != "diverged" and not math.isfinite(final["train_loss"]):
        status = "diverged"
    result = TrainResult(status, step, final["train_acc"], final["test_acc"],
                         final["train_loss"], final["seconds"], curve)
    return model, result


def _checkpoint(model, x_train, y_train, x_test, y_test, step, start) -> dict:
    train_loss, train_acc = evaluate(model, x_train, y_train)
    _, test_acc = evaluate(model, x_test, y_test)
    return {"step": step, "train_loss": train_loss, "train_acc": train_acc,
            "test_acc": test_acc, "seconds": time.perf_counter() - start}
