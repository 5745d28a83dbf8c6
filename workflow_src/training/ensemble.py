"""Train K networks of one shape at once, as one stacked ensemble.

Member k is exactly the network ``train.train`` would train alone: the same initial weights
(``build_model(spec, seed)``), its own generator for batch order and augmentation, seeded
and drawn from in ``train.train``'s order, its own learning rate, dataset (label noise and
pixel corruptions may differ) and stopping rule (target, max_steps, eval_every,
stop_at_target). What the members share is what makes their tensors stack: architecture,
optimizer kind, batch size, augmentation on or off, the loss, input shape and the sizes of
both splits.

Each parameter is stacked over members, a weight as (K, out, in), and the layers run as
batched matmuls. The optimizers are torch.optim's update rules written out with a (K,)
learning rate. A member that stops (converged, out of steps, or diverged) leaves the stack
with its weights as they are: it stops changing at that step, costs nothing afterwards, and
a non-finite member cannot reach the others. Curves' ``seconds`` count from the start of
the whole ensemble.

Checkpoints (``train_stacked(..., checkpoints=)``, a CheckpointStore of the whole stack:
train_shard keeps it in the shard's folder, its identity naming every member): at the steps
the store says are due, the stack saves its whole state: the step and the position in the
epoch, every active member's rows of the stacked parameters, optimizer slots and epoch
orders, the update count, the active members' generators, every member's curve so far, and
the final weights and result of each member that has already stopped. A stack resumed from
it gives exactly (bit for bit) the networks, curves and results of an uninterrupted one;
``seconds`` count on from the checkpoint's. Members are matched by run id, so the rows can
be put back whatever the order of ``runs``; a checkpoint that does not fit is discarded
(with a log line) and training starts from step 0.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch
import xarray as xr

from .augmentation import apply_augmentation, draw_augmentation
from .checkpoints import CheckpointStore, stop_requested
from ..nets.losses import per_point_loss
from ..nets.models import MLP, build_model
from ..runtable import RunSpec
from .stacked import (
    OPTIMIZER_SLOTS, STACKABLE_OPTIMIZERS, StackedOptimizer, stack_parameters, stacked_forward)
from .train import (
    EVAL_CHUNK,
    Checkpoint,
    TrainResult,
    batch_generator,
    describe,
    epoch_order,
    finish,
    is_eval_step,
    model_spec_for,
    stop_status,
)

# Run settings all members must share for their tensors to stack.
SHARED_SETTINGS = ("width", "depth", "activation", "bias", "optimizer", "batch_size",
                   "augment", "architecture", "batch_norm", "loss")


def stackable(run: RunSpec) -> bool:
    """Whether train_stacked can train this run: what the stacked update rules implement
    (stacked.py): today's MLPs, optimizers (STACKABLE_OPTIMIZERS) and augmentation. Other
    runs (CNNs, L-BFGS, weight decay, schedules, a momentum other than 0.9, crops) train
    one after another, with the same numbers."""
    return (run.architecture == "mlp" and run.optimizer in STACKABLE_OPTIMIZERS
            and run.momentum is None and run.weight_decay == 0
            and run.lr_schedule == "constant" and run.augment in (True, False)
            and not run.mixed_precision)


# Gathered input values per evaluation pass, over all members (2^25 floats: 128 MiB in
# float32), so evaluating thousands of members stays within memory.
EVAL_BUDGET = 2 ** 25


class _StackedData:
    """The members' datasets on the device, each distinct dataset once.

    x_train: (U, N, C, H, W) for U distinct datasets; member_data: (K,) which one each
    member trains on. Datasets are the same when they are the same object or share a
    ``data_id`` (a hash of what fixes a corrupted dataset).
    """

    def __init__(self, datas: list[xr.Dataset], device: torch.device):
        keys = [data.attrs.get("data_id", id(data)) for data in datas]
        by_key = dict(zip(keys, datas))  # insertion-ordered: first appearance
        unique = list(by_key)
        self.member_data = torch.tensor([unique.index(key) for key in keys], device=device)
        for name in ("x_train", "y_train", "x_test", "y_test"):
            values = [torch.as_tensor(by_key[key][name].values, device=device) for key in unique]
            setattr(self, name, torch.stack(values))

    def select(self, rows: torch.Tensor) -> None:
        self.member_data = self.member_data[rows]


def check_stackable(runs: list[RunSpec], datas: list[xr.Dataset]) -> None:
    """Raise ValueError unless these runs can train as one stack."""
    if not runs or len(runs) != len(datas):
        raise ValueError(f"train_stacked needs one dataset per run, got {len(runs)} runs "
                         f"and {len(datas)} datasets")
    unstackable = [run.id for run in runs if not stackable(run)]
    if unstackable:
        raise ValueError(f"train_stacked trains MLPs with constant learning rates, no weight "
                         f"decay, momentum 0.9 and translation augmentation only; train "
                         f"{', '.join(unstackable)} one after another (train.train)")
    for name in SHARED_SETTINGS:
        values = {getattr(run, name) for run in runs}
        if len(values) > 1:
            raise ValueError(f"train_stacked needs one {name} for all runs, got {sorted(values)};"
                             f" group the runs by {SHARED_SETTINGS} and train each group")
    for name in ("x_train", "x_test", "y_train", "y_test"):
        shapes = {(data[name].shape, str(data[name].dtype)) for data in datas}
        if len(shapes) > 1:
            raise ValueError(f"train_stacked needs one shape and dtype of {name} for all "
                             f"datasets, got {sorted(shapes)}")
    if len({int(data.attrs["n_classes"]) for data in datas}) > 1:
        raise ValueError("train_stacked needs one n_classes for all datasets")


def train_stacked(runs: list[RunSpec], datas: list[xr.Dataset], device: torch.device,
                  log=print, checkpoints: CheckpointStore | None = None
                  ) -> list[tuple[MLP, TrainResult]]:
    """Train runs[k] on datas[k] for every k, as train.train would one by one.

    checkpoints: where to save the whole stack's state at the steps it says are due, and to
    resume from if it holds this stack's latest one (see the module doc). Training without
    one is the same training, step for step.
    """
    check_stackable(runs, datas)
    training = _StackedTraining(runs, datas, device, log)
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        try:
            training.restore(saved)
        except Exception as err:  # intact and this stack's, yet it does not fit
            checkpoints.discard(f"it does not fit this stack ({type(err).__name__}: {err})")
            training = _StackedTraining(runs, datas, device, log)
        else:
            log(f"resumed the stack of {len(runs)} networks from the checkpoint at step "
                f"{training.step} ({len(training.active)} still training, "
                f"{time.perf_counter() - training.start:.1f} s of training)")
    return training.run(checkpoints)


class _StackedTraining:
    """The state of one stacked training: row r of every stacked tensor is member active[r]."""

    def __init__(self, runs, datas, device, log):
        self.runs, self.device, self.log = runs, device, log
        self.data = _StackedData(datas, device)
        self.spec = model_spec_for(runs[0], datas[0])
        dtype = self.data.x_train.dtype  # as train.train: the network takes the data's dtype
        self.models = [build_model(self.spec, run.seed, device).to(dtype) for run in runs]
        self.params = stack_parameters(self.models)
        lr = torch.tensor([run.learning_rate for run in runs], dtype=dtype, device=device)
        self.optimizer = StackedOptimizer(runs[0].optimizer, lr)
        self.generators = [batch_generator(run, device) for run in runs]
        self.active = list(range(len(runs)))
        self.curves: list[list[Checkpoint]] = [[] for _ in runs]
        self.results: list[TrainResult | None] = [None] * len(runs)
        self.full_batch = runs[0].optimizer == "gd"
        self.n = self.data.x_train.shape[1]
        self.batch_size = self.n if self.full_batch else min(runs[0].batch_size, self.n)
        self.start = time.perf_counter()
        self.step, self.cursor = 0, 0  # where run() starts: 0, or a restored checkpoint's

    def run(self, checkpoints: CheckpointStore | None = None) -> list[tuple[MLP, TrainResult]]:
        step, cursor = self.step, self.cursor
        if step == 0:  # not resumed
            for row, point in enumerate(self.evaluate(step)):
                self.curves[self.active[row]].append(point)
            self.orders, cursor = self.epoch_orders(), 0  # (A, n): each member's order
            self.stop({row: "unconverged" for row, k in enumerate(self.active)
                       if self.runs[k].max_steps <= 0}, step)
        while self.active:
            if cursor + self.batch_size > self.n:  # new epoch: drop the ragged tail, reshuffle
                self.orders, cursor = self.epoch_orders(), 0
            idx = self.orders[:, cursor:cursor + self.batch_size]  # (A, B)
            cursor += self.batch_size
            losses = self.batch_losses(idx)  # (A,)
            step += 1
            grads = torch.autograd.grad(losses.sum(), list(self.params.values()))
            grads = dict(zip(self.params, grads))  # row r's gradient is member r's alone
            finite = torch.isfinite(losses.detach()).tolist()
            for row in (r for r, ok in enumerate(finite) if not ok):
                self.log(f"run {self.runs[self.active[row]].id}: step {step}: non-finite loss "
                         f"{losses[row].item()}; stopping as diverged")
            keep = self.stop({row: "diverged" for row, ok in enumerate(finite) if not ok}, step)
            self.optimizer.step(self.params, {name: g[keep] for name, g in grads.items()})
            self.after_update(step)
            # Once every member has stopped, the networks are saved right after: no checkpoint.
            if checkpoints is not None and self.active and checkpoints.due(step):
                checkpoints.save(step, self.state(step, cursor))
            if checkpoints is not None and self.active and stop_requested():  # SIGTERM
                checkpoints.stop(step, lambda: self.state(step, cursor))
        return [(model, result) for model, result in zip(self.models, self.results)]

    # --- checkpoints ------------------------------------------------------------------------

    def state(self, step: int, cursor: int) -> dict:
        """The stack's state after ``step``: tensors, plain containers, numbers and strings
        only (it loads with ``weights_only=True``); members are named by run id and rows are
        those of ``active``."""
        ids = [run.id for run in self.runs]
        finished = {ids[k]: {"result": asdict(result),
                             "model": {name: value.detach().cpu() for name, value
                                       in self.models[k].state_dict().items()}}
                    for k, result in enumerate(self.results) if result is not None}
        slots = {}
        for (name, slot), value in self.optimizer.state.items():
            slots.setdefault(slot, {})[name] = value.detach().cpu()
        return {
            "members": ids, "step": step, "cursor": cursor,
            "active": [ids[k] for k in self.active],
            "orders": self.orders.cpu(),
            "params": {name: p.detach().cpu() for name, p in self.params.items()},
            "optimizer": {"kind": self.optimizer.kind, "updates": self.optimizer.updates,
                          "slots": slots},
            "generators": {ids[k]: self.generators[k].get_state() for k in self.active},
            "curves": {ids[k]: [asdict(point) for point in curve]
                       for k, curve in enumerate(self.curves)},
            "finished": finished,
            "seconds": time.perf_counter() - self.start,
        }

    def restore(self, state: dict) -> None:
        """Put this training, just constructed, in ``state`` (from ``state()``). Raises if
        the state does not fit these runs and data; the training is then to be constructed
        again (train_stacked does)."""
        ids = [run.id for run in self.runs]
        index = {run_id: k for k, run_id in enumerate(ids)}
        if sorted(state["members"]) != sorted(ids):
            raise ValueError("it holds other members")
        step, cursor = int(state["step"]), int(state["cursor"])
        saved_active = [index[run_id] for run_id in state["active"]]
        finished = {index[run_id]: value for run_id, value in state["finished"].items()}
        if sorted([*saved_active, *finished]) != list(range(len(ids))):
            raise ValueError("its active and finished members are not the members")
        if not saved_active:
            raise ValueError("no member is still training")
        if any(not 0 < step < self.runs[k].max_steps for k in saved_active):
            raise ValueError(f"step {step} does not fit the active members' max_steps")
        if not 0 <= cursor <= self.n:
            raise ValueError(f"cursor {cursor} does not fit {self.n} points")
        # Rows in this training's member order, as an uninterrupted run keeps them.
        rows = sorted(range(len(saved_active)), key=saved_active.__getitem__)
        rows = torch.tensor(rows, dtype=torch.long)
        active = sorted(saved_active)
        keep = torch.tensor(active, dtype=torch.long, device=self.device)

        def fitted(saved: dict, like: dict, what: str) -> dict:
            if set(saved) != set(like):
                raise ValueError(f"{what}: names {sorted(saved)}, expected {sorted(like)}")
            out = {}
            for name, value in saved.items():
                value = value[rows]
                want = (len(active), *like[name].shape[1:])
                if tuple(value.shape) != want or value.dtype != like[name].dtype:
                    raise ValueError(f"{what} {name}: {tuple(value.shape)} {value.dtype}, "
                                     f"expected {want} {like[name].dtype}")
                out[name] = value.to(self.device)
            return out

        params = fitted(state["params"], self.params, "parameter")
        optimizer = state["optimizer"]
        slots = optimizer["slots"]
        # Every slot exists after the first update; updates are one a step.
        if (optimizer["kind"] != self.optimizer.kind or int(optimizer["updates"]) != step
                or set(slots) != set(OPTIMIZER_SLOTS[self.optimizer.kind])):
            raise ValueError(f"optimizer state of {optimizer['kind']!r} after "
                             f"{optimizer['updates']} updates, slots {sorted(slots)}")
        slot_values = {slot: fitted(values, self.params, f"optimizer {slot}")
                       for slot, values in slots.items()}
        orders = state["orders"][rows]
        if tuple(orders.shape) != (len(active), self.n):
            raise ValueError(f"orders of {tuple(orders.shape)}")
        curves = {index[run_id]: [Checkpoint(**point) for point in curve]
                  for run_id, curve in state["curves"].items()}
        curves = [curves[k] for k in range(len(ids))]
        results = {k: TrainResult(**value["result"]) for k, value in finished.items()}
        generators = {k: state["generators"][ids[k]] for k in active}
        # Everything is read; now change the training.
        for k, value in finished.items():
            self.models[k].load_state_dict(value["model"])  # strict: names and shapes
            self.results[k] = results[k]
        for k, generator_state in generators.items():
            self.generators[k].set_state(generator_state)
        self.curves = curves
        self.params = {name: p.requires_grad_() for name, p in params.items()}
        self.optimizer.select(keep)
        self.optimizer.updates = step
        self.optimizer.state = {(name, slot): value for slot, values in slot_values.items()
                                for name, value in values.items()}
        self.data.select(keep)
        self.orders = orders.to(self.device)
        self.active = active
        self.step, self.cursor = step, cursor
        self.start = time.perf_counter() - float(state["seconds"])

    def epoch_orders(self) -> torch.Tensor:
        return torch.stack([epoch_order(self.n, self.full_batch, self.device, self.generators[k])
                            for k in self.active])

    def batch_losses(self, idx: torch.Tensor) -> torch.Tensor:
        """Each active member's mean loss (the runs' loss) on its batch idx[r] (B points): (A,)."""
        member = self.data.member_data[:, None]  # (A, 1)
        xb = self.data.x_train[member, idx]  # (A, B, C, H, W)
        if self.runs[0].augment:
            draws = [draw_augmentation(self.batch_size, self.device, self.generators[k])
                     for k in self.active]
            dy, dx, flip = (torch.cat(parts) for parts in zip(*draws))
            xb = apply_augmentation(xb.flatten(0, 1), dy, dx, flip).view_as(xb)
        logits = stacked_forward(self.params, self.spec, xb)  # (A, B, classes)
        yb = self.data.y_train[member, idx]  # (A, B)
        return per_point_loss(self.runs[0].loss, logits, yb).mean(1)

    def after_update(self, step: int) -> None:
        """Evaluate the members whose eval_every or max_steps falls on this step; stop those
        whose stopping rule says so, and those out of steps."""
        rows = [r for r, k in enumerate(self.active) if is_eval_step(self.runs[k], step)]
        if not rows:
            return
        decided, finals = {}, {}
        for row, point in zip(rows, self.evaluate(step, rows)):
            k = self.active[row]
            self.curves[k].append(point)
            self.log(f"run {self.runs[k].id}: {describe(point)}")
            status = stop_status(self.runs[k], point)
            if status or step >= self.runs[k].max_steps:
                decided[row], finals[row] = status or "unconverged", point
        self.stop(decided, step, finals)

    def stop(self, decided: dict[int, str], step: int,
             finals: dict[int, Checkpoint] | None = None) -> torch.Tensor:
        """Finish the members at rows ``decided`` (row -> status) and drop them from the
        stack; ``finals`` holds their evaluations at this step where already made.
        Returns the rows kept (indices into the rows before)."""
        keep = torch.tensor([r for r in range(len(self.active)) if r not in decided],
                            dtype=torch.long, device=self.device)
        if not decided:
            return keep
        finals = finals or dict(zip(sorted(decided), self.evaluate(step, sorted(decided))))
        with torch.no_grad():
            for row, status in decided.items():
                k = self.active[row]
                for name, param in self.models[k].named_parameters():
                    param.copy_(self.params[name][row])
                self.results[k] = finish(self.runs[k], status, step, self.curves[k], finals[row])
        self.params = {name: p.detach()[keep].requires_grad_() for name, p in self.params.items()}
        self.optimizer.select(keep)
        self.data.select(keep)
        self.orders = self.orders[keep]
        self.active = [k for r, k in enumerate(self.active) if r not in decided]
        return keep

    @torch.no_grad()
    def evaluate(self, step: int, rows: list[int] | None = None) -> list[Checkpoint]:
        """Checkpoints of the members at ``rows`` (all active ones by default)."""
        index = torch.tensor(list(range(len(self.active))) if rows is None else rows,
                             dtype=torch.long, device=self.device)
        params = {name: p[index] for name, p in self.params.items()}
        member = self.data.member_data[index]
        train_loss, train_correct = self._split(params, self.data.x_train, self.data.y_train,
                                                member)
        test_loss, test_correct = self._split(params, self.data.x_test, self.data.y_test,
                                              member)
        seconds = time.perf_counter() - self.start
        n_train, n_test = self.data.x_train.shape[1], self.data.x_test.shape[1]
        return [Checkpoint(step, loss, c_train, n_train, c_test, n_test, seconds, t_loss)
                for loss, c_train, c_test, t_loss
                in zip(train_loss, train_correct, test_correct, test_loss)]

    def _split(self, params, x, y, member) -> tuple[list[float], list[int]]:
        """Mean loss (the runs' loss) and correct count of each member on its split:
        x (U, N, ...), y (U, N), member (A,) which dataset each member uses."""
        n, d = x.shape[1], self.spec.input_dim
        chunk = max(1, min(EVAL_CHUNK, EVAL_BUDGET // (len(member) * d)))
        loss_sum = torch.zeros(len(member), dtype=torch.float64, device=self.device)
        correct = torch.zeros(len(member), dtype=torch.long, device=self.device)
        for start in range(0, n, chunk):
            logits = stacked_forward(params, self.spec, x[member, start:start + chunk])
            yb = y[member, start:start + chunk]  # (A, c)
            # float64 as in train.evaluate, so both give a member the same learning curve.
            loss_sum += per_point_loss(self.runs[0].loss, logits.double(), yb).sum(1)
            correct += (logits.argmax(2) == yb).sum(1)
        return (loss_sum / n).tolist(), correct.tolist()
