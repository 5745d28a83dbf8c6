"""Stage 3: train one network until it fits its training set or runs out of steps, or,
with ``stop_at_target`` false, for exactly its ``max_steps`` (a fixed budget).

The whole dataset sits on the device as one tensor; a batch is a slice of a ``randperm``
drawn from the run's own generator, and augmentation works on whole batches with tensor
ops (the airbench pattern). Full-batch ``gd`` uses the whole training set in its stored
order at every step. A network that misses the target accuracy is kept and marked
``unconverged``; a non-finite loss stops it as ``diverged`` without stopping the study. A
fixed-budget network ends ``converged`` if its final training accuracy reaches the target,
else ``unconverged``; either way ``fit_step`` is the first evaluation after an update at
which the training accuracy reached the target (None: never). The loss is the run's
(``RunSpec.loss``, workflow_src/nets/losses.py); the curve's losses are that loss.

Accuracies and the gap come from integer counts, so two networks with equal counts get
bit-equal numbers (Kendall's tau must see a tie as a tie). The network takes the dtype of
the data's ``x_train``: float32 from stage 2; tests pass float64 data to compare in float64.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import torch
import xarray as xr
from torch import nn

from .augmentation import augment_batch
from .checkpoints import CheckpointStore, stop_requested
from ..nets.losses import batch_loss, per_point_loss
from ..nets.models import ModelSpec, build_model
from ..runtable import RunSpec

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop", "gd", "lbfgs")
LBFGS_HISTORY = 100  # curvature pairs L-BFGS keeps
EVAL_CHUNK = 4096  # points per forward pass when evaluating a whole split


@dataclass
class TrainResult:
    status: str  # converged | unconverged | diverged
    steps: int
    train_correct: int  # against the labels trained on (corrupted labels included)
    n_train: int
    test_correct: int
    n_test: int
    train_loss: float  # mean training loss (the run's loss) on the training set
    seconds: float
    # step, train_loss, test_loss, train_acc, test_acc, seconds
    curve: list[dict] = field(default_factory=list)
    fit_step: int | None = None  # first evaluation after an update reaching the target
    loss: str = "cross_entropy"  # the loss trained with, of train_loss and the curve

    @property
    def train_acc(self) -> float:
        return self.train_correct / self.n_train  # one correctly rounded division

    @property
    def test_acc(self) -> float:
        return self.test_correct / self.n_test

    @property
    def gap(self) -> float:
        """train_acc - test_acc, rounded once from the exact fraction, so that equal
        fractions (24/100 from 100 - 76 or from 80 - 56) give the same float."""
        return float(Fraction(self.train_correct, self.n_train)
                     - Fraction(self.test_correct, self.n_test))


@dataclass(frozen=True)
class Checkpoint:
    """One full evaluation of a network on both splits."""

    step: int
    train_loss: float
    train_correct: int
    n_train: int
    test_correct: int
    n_test: int
    seconds: float
    test_loss: float = float("nan")

    def curve_point(self) -> dict:
        return {"step": self.step, "train_loss": self.train_loss, "test_loss": self.test_loss,
                "train_acc": self.train_correct / self.n_train,
                "test_acc": self.test_correct / self.n_test, "seconds": self.seconds}


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; use 'auto'")
    return torch.device(requested)


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """torch.optim's optimizer of that name. ``momentum`` is used by "momentum" only;
    ``weight_decay`` is torch's coupled L2 term (lbfgs has none: train adds it to the loss)."""
    # Only non-default keywords are passed, so the default runs' optimizers (and their
    # checkpointed state) are exactly those of the code before these settings existed.
    decay = {"weight_decay": weight_decay} if weight_decay else {}
    if name in ("sgd", "gd"):  # gd is plain SGD on full batches
        return torch.optim.SGD(params, lr=lr, **decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, **decay)
    if name == "lbfgs":  # one iteration per step; the line search picks the step length
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=25, history_size=LBFGS_HISTORY,
                                 line_search_fn="strong_wolfe")
    raise ValueError(f"optimizer {name!r} is not one of {OPTIMIZERS}")


def run_optimizer(run: RunSpec, params) -> torch.optim.Optimizer:
    return make_optimizer(run.optimizer, params, run.learning_rate, run.effective_momentum,
                          0.0 if run.optimizer == "lbfgs" else run.weight_decay)


def learning_rate_at(run: RunSpec, step: int, steps_per_epoch: int) -> float:
    """The rate of update number ``step`` (1-based) under the run's schedule. A pure
    function of the step, so a resumed run needs no scheduler state."""
    done = step - 1  # updates before this one
    if run.lr_schedule == "exponential":  # Zhang et al.: times lr_decay after every epoch
        return run.learning_rate * run.lr_decay ** (done // steps_per_epoch)
    if run.lr_schedule == "multistep":
        return run.learning_rate * run.lr_gamma ** sum(done >= m for m in run.lr_milestones)
    return run.learning_rate


def epoch_order(n: int, full_batch: bool, device, generator: torch.Generator) -> torch.Tensor:
    """The order of the n training points for the next epoch: a permutation from the run's
    generator, or for full-batch gd the stored order, so every step sums the same way."""
    if full_batch:
        return torch.arange(n, device=device)
    return torch.randperm(n, device=device, generator=generator)


def batch_generator(run: RunSpec, device) -> torch.Generator:
    """The run's batch-order and augmentation stream, separate from the initialisation
    stream (which build_model seeds on the CPU)."""
    return torch.Generator(device=device).manual_seed(run.seed + 1_000_003)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy"
             ) -> tuple[float, int]:
    """(mean ``loss`` over the points (losses.py; cross-entropy in nats by default),
    number of correctly classified points) over a whole split, EVAL_CHUNK points per
    forward pass, in eval mode (batch norm's running statistics, as the network is
    measured); the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, x, y, loss)
    finally:
        model.train(was_training)


def _evaluate(model, x: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[float, int]:
    total_loss, total_correct = 0.0, 0
    for start in range(0, x.shape[0], EVAL_CHUNK):
        logits = model(x[start:start + EVAL_CHUNK])
        yb = y[start:start + EVAL_CHUNK]
        # float64: a fitted network's per-point losses (~1e-8 and below) vanish in float32.
        total_loss += per_point_loss(loss, logits.double(), yb).sum().item()
        total_correct += int((logits.argmax(1) == yb).sum().item())
    return total_loss / x.shape[0], total_correct


def model_spec_for(run: RunSpec, data: xr.Dataset) -> ModelSpec:
    return ModelSpec(
        input_shape=tuple(data["x_train"].shape[1:]), n_classes=int(data.attrs["n_classes"]),
        width=run.width, depth=run.depth, activation=run.activation, bias=run.bias,
        architecture=run.architecture, batch_norm=run.batch_norm,
    )


def train(run: RunSpec, data: xr.Dataset, device: torch.device, log=print,
          checkpoints: CheckpointStore | None = None) -> tuple[nn.Module, TrainResult]:
    """Train the network of ``run`` on ``data`` (a corrupted dataset from stage 2).

    checkpoints: where to save the loop's state at the steps it says are due, and to resume
    from if it holds this network's latest one (workflow_src/training/checkpoints.py). A resumed run
    gives exactly the weights, curve and result of an uninterrupted one; its ``seconds``
    count the time of the runs that reached the checkpoint plus the resumed run's.
    """
    x_train = torch.as_tensor(data["x_train"].values, device=device)  # (N, C, H, W)
    y_train = torch.as_tensor(data["y_train"].values, device=device)  # (N,)
    x_test = torch.as_tensor(data["x_test"].values, device=device)
    y_test = torch.as_tensor(data["y_test"].values, device=device)
    n = x_train.shape[0]
    spec = model_spec_for(run, data)
    (model, optimizer, generator), state = _resume(
        checkpoints, lambda: _fresh(run, spec, device, x_train.dtype), n, run, device, log)
    full_batch = run.full_batch
    batch_size = n if full_batch else min(run.batch_size, n)
    steps_per_epoch = n // batch_size
    scheduled = run.lr_schedule != "constant"

    def checkpoint(at_step: int) -> Checkpoint:
        return _checkpoint(model, x_train, y_train, x_test, y_test, at_step, start, run.loss)

    step, status, order, cursor, curve, seconds = state or (0, "", None, 0, None, 0.0)
    start = time.perf_counter() - seconds
    if state is None:
        # Step 0 is the initial network (its loss is about ln K), where learning curves
        # start; the stopping rule is checked from the first evaluation after an update.
        curve = [checkpoint(0)]
        order, cursor = epoch_order(n, full_batch, device, generator), 0
    while not status and step < run.max_steps:
        if cursor + batch_size > n:  # new epoch: drop the ragged tail, reshuffle
            order, cursor = epoch_order(n, full_batch, device, generator), 0
        idx = order[cursor:cursor + batch_size]
        cursor += batch_size
        xb, yb = augment_batch(run, x_train[idx], generator), y_train[idx]
        step += 1
        if scheduled:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(run, step, steps_per_epoch)
        loss, finite = _update(run, model, optimizer, xb, yb, device)
        if not finite:
            status = "diverged"
            log(f"step {step}: non-finite loss {loss.item()}; stopping as diverged")
            break
        if is_eval_step(run, step):
            point = checkpoint(step)
            curve.append(point)
            log(describe(point))
            status = stop_status(run, point) or ""
        last = bool(status) or step == run.max_steps  # the network is saved right after
        if checkpoints is not None and checkpoints.due(step) and (
                not last or step in checkpoints.keep):
            checkpoints.save(step, training_state(step, status, order, cursor, curve, model,
                                                  optimizer, generator, start))
        if checkpoints is not None and not last and stop_requested():  # SIGTERM: save, stop
            checkpoints.stop(step, lambda: training_state(step, status, order, cursor, curve,
                                                          model, optimizer, generator, start))
    return model, finish(run, status or "unconverged", step, curve, checkpoint(step))


def _fresh(run: RunSpec, spec: ModelSpec, device: torch.device, dtype: torch.dtype):
    """The initial network of ``run`` (in ``dtype``), its optimizer and batch generator."""
    model = build_model(spec, seed=run.seed, device=device)
    model = model.to(dtype)  # a no-op for stage 2's float32 data
    if device.type == "cuda" and run.architecture != "mlp":
        # cuDNN's fast convolutions are for NHWC; the numbers are those of NCHW.
        model = model.to(memory_format=torch.channels_last)
    model.train()
    return model, run_optimizer(run, model.parameters()), batch_generator(run, device)


def _resume(checkpoints: CheckpointStore | None, fresh, n: int, run: RunSpec,
            device: torch.device, log):
    """((network, optimizer, generator), state): ``fresh()``'s, with the loop's state (step,
    status, order, cursor, curve, seconds) from this network's latest checkpoint, or None
    for the state when none fits (one that does not is discarded, the network rebuilt)."""
    model, optimizer, generator = fresh()
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is None:
        return (model, optimizer, generator), None
    try:
        state = restore_state(saved, model, optimizer, generator, n, run.max_steps, device)
    except Exception as err:  # intact and this network's, yet it does not fit
        checkpoints.discard(f"it does not fit this network ({type(err).__name__}: {err})")
        return fresh(), None
    log(f"resumed from the checkpoint at step {state[0]} ({state[5]:.1f} s of training)")
    return (model, optimizer, generator), state


def _update(run: RunSpec, model: nn.Module, optimizer, xb: torch.Tensor, yb: torch.Tensor,
            device: torch.device) -> tuple[torch.Tensor, bool]:
    """Loss on (xb, yb), and if it is finite; no step after one that is not (L-BFGS's aside)."""
    if run.optimizer == "lbfgs":
        loss = lbfgs_step(model, optimizer, xb, yb, run.weight_decay,
                          lambda: forward_precision(run, device), run.loss)
        return loss, bool(torch.isfinite(loss))
    with forward_precision(run, device):
        loss = batch_loss(run.loss, model(xb), yb)
    if not torch.isfinite(loss):
        return loss, False
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, True


def forward_precision(run: RunSpec, device: torch.device):
    """The context of a training forward pass: bfloat16 autocast for ``mixed_precision``
    runs (matrix products and convolutions in bfloat16, reductions, softmax and the loss in
    float32, as torch.autocast lists them; no loss scaling, which bfloat16's float32 range
    does not need), else nothing. Weights and optimizer state stay float32, and backward
    runs outside it, as PyTorch prescribes."""
    if run.mixed_precision:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def lbfgs_step(model, optimizer, xb, yb, weight_decay: float, precision=nullcontext,
               loss_kind: str = "cross_entropy") -> torch.Tensor:
    """One L-BFGS iteration on the batch; returns the loss before it (the line search
    evaluates the loss a few more times). Weight decay enters as (lambda/2) ||w||^2.
    ``precision()`` is the forward pass's context (forward_precision)."""
    def closure():
        optimizer.zero_grad(set_to_none=True)
        with precision():
            loss = batch_loss(loss_kind, model(xb), yb)
        if weight_decay:
            loss = loss + 0.5 * weight_decay * sum((p * p).sum() for p in model.parameters())
        loss.backward()
        return loss
    return optimizer.step(closure).detach()


def training_state(step, status, order, cursor, curve, model, optimizer, generator,
                   start) -> dict:
    """The loop's state after ``step``: tensors, plain containers, numbers and strings only,
    so that it loads with ``weights_only=True``. ``status`` is "" while training goes on."""
    return {
        "step": step, "status": status, "cursor": cursor, "order": order.cpu(),
        "generator": generator.get_state(),  # a CPU byte tensor, for CPU and CUDA generators
        "model": {name: value.detach().cpu() for name, value in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "curve": [asdict(point) for point in curve],
        "seconds": time.perf_counter() - start,
    }


def restore_state(state: dict, model, optimizer, generator, n: int, max_steps: int, device):
    """Load ``state`` (from training_state) into model, optimizer and generator; returns
    (step, status, order, cursor, curve, seconds). Raises if it does not fit."""
    step, status, cursor = int(state["step"]), str(state["status"]), int(state["cursor"])
    order = state["order"].to(device)
    if not 0 < step <= max_steps or order.shape != (n,) or not 0 <= cursor <= n:
        raise ValueError(f"step {step}, order of {tuple(order.shape)}, cursor {cursor} "
                         f"do not fit {n} points and {max_steps} steps")
    if status not in ("", "converged", "diverged"):
        raise ValueError(f"status {status!r}")
    curve = [Checkpoint(**point) for point in state["curve"]]
    model.load_state_dict(state["model"])  # strict: every name and shape must match
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return step, status, order, cursor, curve, float(state["seconds"])


def is_eval_step(run: RunSpec, step: int) -> bool:
    return step % run.eval_every == 0 or step == run.max_steps


def fits(run: RunSpec, point: Checkpoint) -> bool:
    """Whether the network of ``point`` reaches the run's target training accuracy."""
    return point.train_correct / point.n_train >= run.target_train_acc


def stop_status(run: RunSpec, point: Checkpoint) -> str | None:
    """What an evaluation after an update decides: 'diverged', 'converged', or go on (a
    fixed-budget run, stop_at_target false, goes on until max_steps)."""
    if not math.isfinite(point.train_loss):
        return "diverged"
    if run.stop_at_target and fits(run, point):
        return "converged"
    return None


def finish(run: RunSpec, status: str, step: int, curve: list[Checkpoint],
           final: Checkpoint) -> TrainResult:
    """The result of a network that stopped after ``step`` updates with ``status``;
    ``final`` is its evaluation at that point, added to the curve unless already there.
    Out of steps, a network is ``converged`` if ``final`` fits (a fixed budget's end)."""
    if curve[-1].step != step:
        curve.append(final)
    if status != "diverged" and not math.isfinite(final.train_loss):
        status = "diverged"
    if status == "unconverged" and fits(run, final):
        status = "converged"
    fit_step = next((point.step for point in curve if point.step > 0 and fits(run, point)),
                    None)
    return TrainResult(status, step, final.train_correct, final.n_train, final.test_correct,
                       final.n_test, final.train_loss, final.seconds,
                       [point.curve_point() for point in curve], fit_step, run.loss)


def describe(point: Checkpoint) -> str:
    values = point.curve_point()
    return (f"step {point.step}: train loss {point.train_loss:.4g}, train acc "
            f"{values['train_acc']:.4f}, test acc {values['test_acc']:.4f}")


def _checkpoint(model, x_train, y_train, x_test, y_test, step, start, loss) -> Checkpoint:
    train_loss, train_correct = evaluate(model, x_train, y_train, loss)
    test_loss, test_correct = evaluate(model, x_test, y_test, loss)
    return Checkpoint(step, train_loss, train_correct, x_train.shape[0], test_correct,
                      x_test.shape[0], time.perf_counter() - start, test_loss)
