"""Steps per second of CNN training: gensens' loop (train.train) against a plain PyTorch loop.

The networks are those of workflow_src/nets/cnns.py: alexnet_small, inception_small with and
without batch norm, WRN-10-1 and WRN-16-2 (relu, biases), built with models.build_model from
the same seed for both loops. The data are synthetic and CIFAR-shaped, made with numpy:
3 x 32 x 32 images of uint8 levels scaled to [0, 1] (k / 255, float32), 10 classes, uniform
labels (a step's cost does not depend on the pixel values). SGD with momentum 0.9, lr 0.01,
batches of --batch (default 128), augmentation off and on ("crop": random 28 x 28 crops and
horizontal flips; off, the networks centre-crop the 32 x 32 inputs to 28 x 28 themselves).

(plain) A pytorch/examples-style loop: DataLoader(shuffle=True, drop_last=True, the default
    num_workers=0) over a TensorDataset on the CPU; with augmentation, a Python loop over
    the batch's images, each cropped at a random offset and flipped with probability 1/2
    as torchvision's RandomCrop and RandomHorizontalFlip do (torch.randint(...).item(),
    torch.rand(1) < 0.5); then .to(device) per batch, NCHW float32,
    optimizer.zero_grad(); loss.backward(); optimizer.step().
(gensens) workflow_src.training.train.train itself with a RunSpec (optimizer "momentum"), the target
    accuracy out of reach and eval_every = max_steps: the data sit on the device as one
    tensor, batches are slices of a randperm, augmentation is batched tensor ops.

Only the steps are timed. train() evaluates both splits at step 0 and at its last step; a
stand-in for its checkpoint store (StepClock: it saves nothing) reads the clock after
update W and after update W + K, so the window holds K updates and no evaluation. The plain
loop reads the clock at the same two points. W = --warmup updates (allocations, cuDNN's
algorithm choice) are left out of both; K is set by the plain loop (at least --min-steps,
and until --seconds have passed, at most --max-steps), and gensens runs the same K. On CUDA
the clock synchronizes the device first. The training set is 2 batches (--epoch-batches),
so both loops reshuffle every few updates, as they would every epoch.

Rows: on the CPU one per network and augmentation. On CUDA three variants each:
  fp32           plain NCHW float32 vs train() as the workflow runs it (on CUDA it always
                 converts the CNNs to channels_last; there is no NCHW train());
  channels_last  plain with the network and each batch in channels_last vs the same train()
                 timing as the row above (measured once);
  bf16           bfloat16 autocast: the plain loop's forward and loss inside
                 torch.autocast(dtype=torch.bfloat16), backward outside; train() with the
                 run's mixed_precision on (training.mixed_precision), which does the same.
Without a visible GPU the CUDA rows are skipped with a note. --cpu-bf16 adds the bf16 row on
the CPU (CPU autocast; bfloat16 pays only where the hardware has fast bfloat16 units). On the CPU too, train()'s crop
batches reach the network in channels_last memory (random_crops gathers from an NHWC view),
while the plain loop's stacked crops and both loops' uncropped batches are NCHW. The ratio is gensens steps/s
over plain steps/s (> 1: gensens faster). No timing is asserted.

    .venv/bin/python benchmarks/bench_cnn.py [--quick] [--threads 1] [--batch 128]
        [--devices cpu,cuda] [--archs alexnet_small,inception_small,inception_small_nobn,
        wrn-10-1,wrn-16-2] [--seconds 8] [--min-steps 4] [--cpu-bf16]

The default run takes about 4-5 minutes on one thread of this 2-core CPU (4 min 20 s on a
shared one); --quick (batches of 32, K >= 3, 0.5 s windows) under a minute (44 s).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from workflow_src.nets.cnns import parameter_count
from workflow_src.nets.models import build_model
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.train import model_spec_for, train

UNREACHABLE = 2.0  # target train accuracy: never met, so train() runs all its steps
CROP = 28


@dataclass(frozen=True)
class Net:
    name: str
    architecture: str
    width: int = 0
    depth: int = 0
    batch_norm: bool = False


NETS = {net.name: net for net in (
    Net("alexnet_small", "alexnet_small"),
    Net("inception_small", "inception_small", batch_norm=True),
    Net("inception_small_nobn", "inception_small", batch_norm=False),
    Net("wrn-10-1", "wrn", width=1, depth=10, batch_norm=True),
    Net("wrn-16-2", "wrn", width=2, depth=16, batch_norm=True),
)}


def synthetic_cifar(n_train: int, n_test: int, seed: int = 0) -> xr.Dataset:
    """CIFAR-shaped data: uint8 levels / 255 as float32 (N, 3, 32, 32), 10 uniform classes."""
    rng = np.random.default_rng(seed)

    def images(n):
        return (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8) / 255).astype(np.float32)

    return xr.Dataset(
        {"x_train": (("train", "c", "h", "w"), images(n_train)),
         "y_train": ("train", rng.integers(0, 10, n_train)),
         "x_test": (("test", "c", "h", "w"), images(n_test)),
         "y_test": ("test", rng.integers(0, 10, n_test))},
        attrs={"n_classes": 10})


def make_run(net: Net, data: xr.Dataset, batch: int, augment, max_steps: int,
             mixed_precision: bool = False) -> RunSpec:
    spec = DataSpec("synthetic_cifar", data.sizes["train"], data.sizes["test"], "none", 0.0,
                    0, False, False)
    return RunSpec(data=spec, width=net.width, depth=net.depth, activation="relu", bias=True,
                   optimizer="momentum", learning_rate=0.01, batch_size=batch,
                   augment=augment, seed=0, target_train_acc=UNREACHABLE,
                   max_steps=max_steps, eval_every=max_steps,
                   architecture=net.architecture, batch_norm=net.batch_norm,
                   mixed_precision=mixed_precision)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Stands in for train()'s CheckpointStore: resumes nothing, saves nothing, and reads
    the clock right after update ``first`` and update ``last`` (train() asks ``due(step)``
    after every update and after that step's evaluation, if any; there is none before
    max_steps here)."""

    keep = ()

    def __init__(self, first: int, last: int, device: torch.device):
        self.first, self.last, self.device = first, last, device
        self.times: dict[int, float] = {}

    def load(self):
        return None

    def due(self, step: int) -> bool:
        if step in (self.first, self.last):
            sync(self.device)
            self.times[step] = time.perf_counter()
        return False

    def steps_per_second(self) -> float:
        return (self.last - self.first) / (self.times[self.last] - self.times[self.first])


def crop_flip(image: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """One image (C, H, W): a random size x size crop, then a flip with probability 1/2,
    drawn as torchvision's RandomCrop and RandomHorizontalFlip draw them."""
    h, w = image.shape[-2:]
    top = torch.randint(0, h - size + 1, size=(1,)).item()
    left = torch.randint(0, w - size + 1, size=(1,)).item()
    image = image[:, top:top + size, left:left + size]
    if torch.rand(1) < 0.5:
        image = image.flip(-1)
    return image


def plain_loop(run: RunSpec, data: xr.Dataset, device: torch.device, variant: str,
               warmup: int, min_steps: int, seconds: float, max_steps: int
               ) -> tuple[float, int]:
    """(steps per second, K): the plain loop, timed from update ``warmup`` for K updates,
    K >= min_steps and until ``seconds`` have passed (at most max_steps)."""
    torch.manual_seed(run.seed)  # the augmentation's draws
    tensors = [torch.as_tensor(data[name].values) for name in ("x_train", "y_train")]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors),
                                         batch_size=run.batch_size, shuffle=True,
                                         drop_last=True,
                                         generator=torch.Generator().manual_seed(run.seed))
    # On CUDA bf16 runs channels_last, as train() does there; on the CPU train() is NCHW.
    memory = (torch.channels_last if variant == "channels_last"
              or (variant == "bf16" and device.type == "cuda") else None)
    model = build_model(model_spec_for(run, data), run.seed, device)
    if memory is not None:
        model = model.to(memory_format=memory)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=run.learning_rate, momentum=0.9)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if variant == "bf16"
                else contextlib.nullcontext())
    step, begin, k = 0, 0.0, 0
    while True:
        for xb, yb in loader:
            if run.augment:
                xb = torch.stack([crop_flip(image) for image in xb])
            xb = (xb.to(device) if memory is None
                  else xb.to(device, memory_format=memory))
            yb = yb.to(device)
            with autocast:
                loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == warmup:
                sync(device)
                begin = time.perf_counter()
            elif step > warmup:
                k = step - warmup
                if k >= max_steps or (k >= min_steps and time.perf_counter() - begin >= seconds):
                    sync(device)
                    return k / (time.perf_counter() - begin), k


def gensens_loop(net: Net, data: xr.Dataset, batch: int, augment, device: torch.device,
                 variant: str, warmup: int, k: int) -> float:
    """Steps per second of train.train over updates warmup+1 .. warmup+k."""
    run = make_run(net, data, batch, augment, max_steps=warmup + k + 1,
                   mixed_precision=variant == "bf16")
    clock = StepClock(warmup, warmup + k, device)
    train(run, data, device, log=lambda *_: None, checkpoints=clock)
    return clock.steps_per_second()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batches of 32, K >= 3 updates, 0.5 s windows")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 128; "
                        "32 with --quick)")
    parser.add_argument("--devices", default="cpu,cuda",
                        help="comma-separated; cuda rows are skipped without a GPU")
    parser.add_argument("--archs", default=",".join(NETS), help=f"any of {', '.join(NETS)}")
    parser.add_argument("--augment", default="off,crop", help="off, crop or both")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="add the bf16 autocast row on the CPU too")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed window of the plain loop (default 8; 0.5 with --quick)")
    parser.add_argument("--min-steps", type=int, default=None,
                        help="fewest timed updates (default 4; 3 with --quick)")
    parser.add_argument("--max-steps", type=int, default=1000, help="most timed updates")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first updates")
    parser.add_argument("--epoch-batches", type=int, default=2,
                        help="training points = this many batches")
    parser.add_argument("--test-points", type=int, default=32,
                        help="test points (train() evaluates them, outside the timing)")
    args = parser.parse_args()
    batch = args.batch or (32 if args.quick else 128)
    seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 8.0)
    min_steps = args.min_steps or (3 if args.quick else 4)
    torch.set_num_threads(args.threads)
    nets = [NETS[name] for name in args.archs.split(",")]
    augments = [{"off": False, "crop": "crop"}[a] for a in args.augment.split(",")]
    devices = []
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("note: no CUDA device visible; the CUDA rows (fp32, channels_last, bf16 "
                  "autocast) are skipped")
            continue
        devices.append(torch.device(name))

    data = synthetic_cifar(args.epoch_batches * batch, args.test_points)
    print(f"synthetic CIFAR-shaped data: {data.sizes['train']} training / "
          f"{data.sizes['test']} test points, 3x32x32 in [0, 1], 10 classes; relu, "
          f"SGD momentum 0.9, lr 0.01, batch {batch}; {args.warmup} warm-up updates, then "
          f"K >= {min_steps} timed updates (>= {seconds:g} s of the plain loop, <= "
          f"{args.max_steps}); torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s)")
    for device in devices:
        if device.type == "cuda":
            print(f"cuda: {torch.cuda.get_device_name(device)}")
    header = (f"{'architecture':22s} {'params':>10s} {'augment':>7s} {'device':>6s} "
              f"{'variant':>13s} {'K':>5s} {'plain steps/s':>13s} {'gensens steps/s':>15s} "
              f"{'gensens ÷ plain':>15s}")
    print(header)
    print("-" * len(header))
    for net in nets:
        for augment in augments:
            for device in devices:
                run = make_run(net, data, batch, augment, max_steps=1)
                params = parameter_count(build_model(model_spec_for(run, data), run.seed))
                if device.type == "cpu":
                    variants = ("fp32", "bf16") if args.cpu_bf16 else ("fp32",)
                else:
                    variants = ("fp32", "channels_last", "bf16")
                gensens_fp32 = None
                for variant in variants:
                    plain, k = plain_loop(run, data, device, variant, args.warmup, min_steps,
                                          seconds, args.max_steps)
                    if variant == "channels_last" and gensens_fp32 is not None:
                        ours = gensens_fp32  # train() is channels_last on CUDA already
                    else:
                        ours = gensens_loop(net, data, batch, augment, device, variant,
                                            args.warmup, k)
                    if variant == "fp32":
                        gensens_fp32 = ours
                    print(f"{net.name:22s} {params:>10,} {augment or 'off':>7s} "
                          f"{device.type:>6s} {variant:>13s} {k:>5d} {plain:>13.2f} "
                          f"{ours:>15.2f} {ours / plain:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
