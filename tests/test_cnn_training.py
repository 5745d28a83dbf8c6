"""The convolutional networks in the training stage: they train through train.train on
CIFAR-shaped data (built here, no download) with Zhang et al.'s optimisation, resume from a
checkpoint to the network of an uninterrupted run, round-trip through model.pt, and a shard
of them trains one after another even where stacking is asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_checkpoints import (
    IDENTITY,
    QUIET,
    Interrupted,
    InterruptedAt,
    assert_same_network,
    checkpoint_files,
)

from workflow_src.training.checkpoints import CheckpointStore
from workflow_src.data.acquire import RawDataset
from workflow_src.data.corrupt import make_corrupted
from workflow_src.integrity import write_store
from workflow_src.nets.models import load_model, save_model
from workflow_src.runtable import DataSpec, RunSpec
from workflow_src.training.train import train
from workflow_src.jobs.train_shard import train_shard, training_code_sha

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def synthetic_cifar(n_train=64, n_test=32, seed=0) -> RawDataset:
    """CIFAR-10-shaped images (32x32x3 uint8) whose class sets the mean of one colour
    channel in one quadrant, plus noise: learnable, and distinct under every crop."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % 10
        images = rng.integers(0, 96, size=(n, 32, 32, 3))
        for i, label in enumerate(labels):
            rows, cols = (slice(4, 16), slice(4, 16)) if label < 5 else (slice(16, 28),) * 2
            images[i, rows, cols, label % 3] += 40 + 30 * (label % 5)
        return images.astype(np.uint8), labels.astype(np.int64)

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    return RawDataset("cifar10", xtr, ytr, xte, yte, 10, "synthetic CIFAR-shaped (tests)")


def cnn_run(architecture="inception_small", **changes):
    data = DataSpec("cifar10", 40, 20, "none", 0.0, 0, True, False)
    values = dict(data=data, width=0, depth=0, activation="relu", bias=True,
                  optimizer="momentum", learning_rate=0.01, batch_size=8, augment="crop",
                  seed=1, target_train_acc=1.0, max_steps=12, eval_every=4,
                  architecture=architecture, batch_norm=architecture != "alexnet_small",
                  lr_schedule="exponential", lr_decay=0.95, weight_decay=5e-4)
    values.update(changes)
    return RunSpec(**values)


@pytest.fixture(scope="module")
def cifar():
    return make_corrupted(synthetic_cifar(), cnn_run().data)


@pytest.mark.parametrize("architecture, width, depth", [
    ("alexnet_small", 0, 0), pytest.param("inception_small", 0, 0, marks=pytest.mark.slow),
    ("wrn", 1, 10)])
def test_every_cnn_trains_on_cifar_shaped_data_with_zhangs_optimisation(
        cifar, architecture, width, depth):
    run = cnn_run(architecture, width=width, depth=depth, max_steps=24, eval_every=12,
                  learning_rate=0.05)
    model, result = train(run, cifar, CPU, log=QUIET)
    assert result.steps == 24 and [p["step"] for p in result.curve] == [0, 12, 24]
    # Learning, as the network is evaluated (eval mode: batch norm's running statistics).
    assert np.isfinite(result.train_loss) and result.train_loss < result.curve[0]["train_loss"]


@pytest.mark.slow  # an Inception; a batch-norm WRN resumes in the mixed-precision test below
def test_a_cnn_with_batch_norm_resumes_to_the_uninterrupted_network(cifar, tmp_path):
    """Batch norm's running statistics, momentum buffers, the crop generator and the
    exponential schedule all come back from the checkpoint."""
    run = cnn_run(max_steps=12, eval_every=4)
    alone, alone_result = train(run, cifar, CPU, log=QUIET)
    store = InterruptedAt(tmp_path, IDENTITY, 3, stop_at=6, log=QUIET)  # 5 steps an epoch
    with pytest.raises(Interrupted):
        train(run, cifar, CPU, log=QUIET, checkpoints=store)
    assert checkpoint_files(tmp_path) == ["checkpoint-6.pt", "checkpoint.json"]
    lines = []
    resumed, result = train(run, cifar, CPU, log=lines.append,
                            checkpoints=CheckpointStore(tmp_path, IDENTITY, 3, log=QUIET))
    assert any("resumed from the checkpoint at step 6" in line for line in lines)
    assert_same_network(resumed, result, alone, alone_result)
    assert any("running_mean" in name for name in alone.state_dict())


def test_a_saved_cnn_loads_in_eval_mode_with_the_same_outputs(cifar, tmp_path):
    model, _ = train(cnn_run(max_steps=4), cifar, CPU, log=QUIET)
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert not loaded.training and loaded.spec == model.spec
    x = torch.as_tensor(cifar["x_test"].values[:5])
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_a_shard_of_cnns_trains_one_after_another_even_when_stacking_is_asked(
        cifar, tmp_path):
    runs = [cnn_run("alexnet_small", seed=seed, max_steps=4, lr_schedule="constant",
                    lr_decay=None) for seed in (0, 1)]
    store = tmp_path / "data.zarr"
    write_store(cifar, store)
    lines = []
    summaries = train_shard("s", runs, {runs[0].data.id: store}, tmp_path, CPU, stack=True,
                            log=lambda *parts: lines.append(" ".join(map(str, parts))))
    assert set(summaries) == {run.id for run in runs}
    assert not any("stacked ensemble" in line for line in lines)
    for run in runs:
        # a CNN's code hash covers cnns.py (editing the CNNs retrains them, not the MLPs)
        assert summaries[run.id]["code_sha"] == training_code_sha("alexnet_small")
        assert summaries[run.id]["code_sha"] != training_code_sha("mlp")
        alone, _ = train(run, cifar, CPU, log=QUIET)
        loaded = load_model(tmp_path / "runs" / run.id / "model.pt")
        for a, b in zip(alone.state_dict().values(), loaded.state_dict().values()):
            assert torch.equal(a, b)


# --- mixed precision (training.mixed_precision) -------------------------------------------

def forward_dtypes(model):
    """The dtypes of the first convolution's outputs, pass by pass, in training (True) or
    evaluation (False) mode."""
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, out: seen.append((module.training,
                                                                         out.dtype)))
    return seen


@pytest.mark.parametrize("architecture, width, depth", [
    pytest.param("inception_small", 0, 0, marks=pytest.mark.slow), ("wrn", 1, 10)])
def test_mixed_precision_trains_in_bfloat16_and_evaluates_in_float32(
        cifar, monkeypatch, architecture, width, depth):
    """Under training.mixed_precision the training passes' convolutions run in bfloat16
    (torch.autocast, here on the CPU), the learning curve's evaluations and the weights stay
    float32, the network learns, and it differs from the float32 network (autocast was on)."""
    from workflow_src.training import train as module

    watched = []  # per network built: its first convolution's (mode, output dtype)s
    real_build = module.build_model

    def build_and_watch(*args, **kwargs):
        model = real_build(*args, **kwargs)
        watched.append(forward_dtypes(model))
        return model

    monkeypatch.setattr(module, "build_model", build_and_watch)
    run = cnn_run(architecture, width=width, depth=depth, max_steps=24, eval_every=12,
                  learning_rate=0.05, mixed_precision=True)
    model, result = train(run, cifar, CPU, log=QUIET)
    (passes,) = watched
    assert {dtype for training, dtype in passes if training} == {torch.bfloat16}
    assert {dtype for training, dtype in passes if not training} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(result.train_loss) and result.train_loss < result.curve[0]["train_loss"]
    monkeypatch.undo()
    plain, _ = train(cnn_run(architecture, width=width, depth=depth, max_steps=24,
                             eval_every=12, learning_rate=0.05), cifar, CPU, log=QUIET)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                    plain.state_dict().values()))


def test_a_mixed_precision_cnn_resumes_to_the_uninterrupted_network(cifar, tmp_path):
    run = cnn_run("wrn", width=1, depth=10, max_steps=12, eval_every=4, mixed_precision=True)
    alone, alone_result = train(run, cifar, CPU, log=QUIET)
    with pytest.raises(Interrupted):
        train(run, cifar, CPU, log=QUIET,
              checkpoints=InterruptedAt(tmp_path, IDENTITY, 3, stop_at=6, log=QUIET))
    resumed, result = train(run, cifar, CPU, log=QUIET,
                            checkpoints=CheckpointStore(tmp_path, IDENTITY, 3, log=QUIET))
    assert_same_network(resumed, result, alone, alone_result)


def test_mixed_precision_lbfgs_and_mlp_train(cifar):
    """The other forward paths: L-BFGS's closure and an MLP, under autocast."""
    for run in (cnn_run("wrn", width=1, depth=10, optimizer="lbfgs", learning_rate=0.5,
                        batch_size=40, augment=False, max_steps=4, eval_every=2,
                        lr_schedule="constant", lr_decay=None, weight_decay=0.0,
                        mixed_precision=True),
                cnn_run("mlp", width=32, depth=1, batch_norm=False, optimizer="adam",
                        augment=False, max_steps=20, eval_every=10, lr_schedule="constant",
                        lr_decay=None, weight_decay=0.0, mixed_precision=True)):
        model, result = train(run, cifar, CPU, log=QUIET)
        assert np.isfinite(result.train_loss), run
        assert result.train_loss < result.curve[0]["train_loss"], run
        assert all(p.dtype == torch.float32 for p in model.parameters())
