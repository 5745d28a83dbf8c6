"""Identities, one test per field: a run's and a dataset's id (workflow_src/runtable.py), the
training code's hash (train_shard.training_code_sha) and a shard's membership and id
(workflow_src/shards.py). Every field that determines the thing changes its identity; what
must not matter (key order, the spelling of a number, bookkeeping settings, the order of
the run table) does not. tests/test_run_settings.py pins the ids of every existing preset."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
from workflow_helpers import REPO
from workflow_helpers import tiny_study as study

from workflow_src import shards
from workflow_src.jobs import train_shard
from workflow_src.runtable import (LEGACY_DEFAULTS, DataSpec, RunSpec, build_run_table,
                                   stable_hash)

DATA = DataSpec("digits", 100, 50, "none", 0.0, 0, True, False)
RUN = RunSpec(data=DATA, width=16, depth=1, activation="relu", bias=True, optimizer="sgd",
              learning_rate=0.1, batch_size=20, augment=False, seed=0, target_train_acc=1.0,
              max_steps=10, eval_every=5)
# Another value for every field (the legacy fields away from their legacy value).
OTHER_DATA = {"dataset": "mnist", "n_train": 101, "n_test": 51, "corruption": "gaussian",
              "label_noise": 0.5, "seed": 1, "corrupt_test_inputs": False,
              "corrupt_test_labels": True}
OTHER_RUN = {"width": 32, "depth": 2, "activation": "tanh", "bias": False, "optimizer": "adam",
             "learning_rate": 0.2, "batch_size": 10, "augment": True, "seed": 1,
             "target_train_acc": 0.99, "max_steps": 11, "eval_every": 6, "architecture": "wrn",
             "batch_norm": True, "momentum": 0.5, "weight_decay": 1e-4,
             "lr_schedule": "exponential", "lr_decay": 0.9, "lr_milestones": (5,),
             "lr_gamma": 0.5, "mixed_precision": True, "loss": "squared",
             "stop_at_target": False}


def test_every_field_of_the_specs_is_tested_below():
    """A field added to RunSpec or DataSpec needs its value here (and a decision about its
    legacy value), or the per-field tests would not see it."""
    assert set(OTHER_RUN) == {f.name for f in fields(RunSpec)} - {"data"}
    assert set(OTHER_DATA) == {f.name for f in fields(DataSpec)}


@pytest.mark.parametrize("field", sorted(OTHER_RUN))
def test_every_run_setting_changes_the_run_id(field):
    assert replace(RUN, **{field: OTHER_RUN[field]}).id != RUN.id


@pytest.mark.parametrize("field", sorted(OTHER_DATA))
def test_every_data_setting_changes_the_data_id_and_the_run_id(field):
    data = replace(DATA, **{field: OTHER_DATA[field]})
    assert data.id != DATA.id
    assert replace(RUN, data=data).id != RUN.id


# The fields of the first studies' runs; every field added since has a legacy value (that
# of the networks trained before it existed) at which it stays out of the id.
ORIGINAL_FIELDS = ("data", "width", "depth", "activation", "bias", "optimizer",
                   "learning_rate", "batch_size", "augment", "seed", "target_train_acc",
                   "max_steps", "eval_every")


@pytest.mark.parametrize("field", sorted(set(OTHER_RUN) - set(ORIGINAL_FIELDS)))
def test_a_field_added_later_enters_the_id_only_away_from_its_legacy_value(field):
    """A run at every legacy value has the id the first studies' code gave it (the hash of
    the original fields), so their networks keep their ids; one field away from its
    legacy value enters the hash, and only it."""
    original = {k: v for k, v in asdict(RUN).items() if k in ORIGINAL_FIELDS}
    assert RUN.id == stable_hash(original)
    assert LEGACY_DEFAULTS[field] == getattr(RUN, field)
    changed = replace(RUN, **{field: OTHER_RUN[field]})
    assert changed.id == stable_hash({**original, field: asdict(changed)[field]})


def test_the_hash_is_of_canonical_json_whatever_the_key_order():
    payload = {"b": [1, 2], "a": {"y": 1.5, "x": None}}
    reordered = {"a": {"x": None, "y": 1.5}, "b": [1, 2]}
    assert stable_hash(payload) == stable_hash(reordered)
    assert stable_hash(payload) != stable_hash({**payload, "b": [2, 1]})
    assert len(stable_hash(payload)) == 12 and len(stable_hash(payload, 8)) == 8


def test_a_number_written_as_an_integer_or_a_float_is_one_run():
    """YAML's 1 and 1.0 (0 and 0.0) are one setting: the run table writes every float
    setting as a float before hashing."""
    as_float = study(grid__learning_rate=[1.0], grid__label_noise=[0.0],
                     grid__weight_decay=[0.0], training__target_train_acc=1.0,
                     training__lr_decay=0.5, grid__lr_schedule=["exponential"])
    as_int = study(grid__learning_rate=[1], grid__label_noise=[0], grid__weight_decay=[0],
                   training__target_train_acc=1, training__lr_decay=0.5,
                   grid__lr_schedule=["exponential"])
    assert set(build_run_table(as_int)) == set(build_run_table(as_float))


@pytest.mark.parametrize("change", [
    {"training__threads": 4}, {"training__device": "cpu"}, {"training__checkpoint_every": 7},
    {"training__keep_checkpoints": [5, 10]}, {"shards__size": 1}, {"shards__stack": True},
    {"measure__chunk_size": 16}, {"measure__n_points": 10}, {"stats__n_boot": 500},
    {"plots__color_by": "depth"}, {"study": "another"},
    # lr_decay, lr_milestones and lr_gamma belong to schedules that no run of the grid uses
    {"training__lr_decay": 0.5}, {"training__lr_gamma": 0.5},
    {"training__lr_milestones": [3]},
], ids=lambda change: next(iter(change)))
def test_bookkeeping_settings_leave_every_run_id_as_it_is(change):
    assert set(build_run_table(study(**change))) == set(build_run_table(study()))


def test_the_order_of_axes_values_and_blocks_does_not_change_the_runs():
    config = study()
    ids = set(build_run_table(config))
    grid = config["grid"]
    config["grid"] = [dict(reversed(list({k: v[::-1] for k, v in grid.items()}.items()))),
                      grid]
    assert set(build_run_table(config)) == ids


# --- the training code's hash -------------------------------------------------------------

# The modules whose source determines a trained network (checkpoints.py only resumes it,
# bit for bit: tests/test_checkpoints.py; its own digest is in every checkpoint's identity).
# Paths relative to workflow_src/; CNN_ONLY is left out of an MLP's hash.
NETWORK_CODE = ("training/train.py", "nets/models.py", "nets/spec.py", "runtable.py",
                "training/ensemble.py", "nets/cnns.py", "nets/cnn_codes.py", "nets/losses.py",
                "training/augmentation.py", "training/stacked.py")
CNN_ONLY = ("nets/cnns.py", "nets/cnn_codes.py")
ARCHITECTURES = ("mlp", "wrn", "alexnet_small", "inception_small")


def code_sha_with(monkeypatch, name: str, extra: bytes, architecture: str = "mlp") -> str:
    """training_code_sha(architecture) as if ``extra`` were appended to workflow_src/<name>."""
    real = Path.read_bytes

    def read_bytes(path):
        return real(path) + (extra if path.as_posix().endswith(f"/workflow_src/{name}")
                             else b"")

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return train_shard.training_code_sha(architecture)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("name", NETWORK_CODE)
def test_editing_a_module_that_builds_or_trains_networks_changes_the_code_hash(
        monkeypatch, name, architecture):
    """Every architecture's hash covers the code that builds and trains it; cnns.py only
    the CNNs' (an MLP is built without it, and keeps its hash when the CNNs change)."""
    before = train_shard.training_code_sha(architecture)
    after = code_sha_with(monkeypatch, name, b"\n# edited\n", architecture)
    assert (after != before) == (name not in CNN_ONLY or architecture != "mlp")


@pytest.mark.parametrize("name", ["integrity.py", "jobs/adapter.py", "shards.py", "jobs/aggregate.py"])
def test_editing_a_module_that_does_not_train_leaves_the_code_hash(monkeypatch, name):
    before = train_shard.training_code_sha()
    assert code_sha_with(monkeypatch, name, b"\n# edited\n") == before


def test_the_code_hash_does_not_depend_on_where_the_checkout_lies(monkeypatch, tmp_path):
    package = tmp_path / "elsewhere" / "workflow_src"
    package.mkdir(parents=True)
    for name in train_shard.TRAINING_CODE:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_bytes((REPO / "workflow_src" / name).read_bytes())
    before = train_shard.training_code_sha()
    monkeypatch.setattr(train_shard, "__file__", str(package / "jobs" / "train_shard.py"))
    assert train_shard.training_code_sha() == before


def test_every_module_that_training_imports_is_one_the_test_above_edits():
    """Build an MLP and every CNN in a fresh interpreter, with the trainers imported: the
    workflow_src modules loaded are NETWORK_CODE's (and checkpoints.py with integrity.py,
    whose digests it uses), so that list stays complete. A package's __init__.py is
    loaded too: it must hold nothing but constants (its docstring, a version), so it cannot
    change a network."""
    script = (
        "import sys, torch\n"
        "from workflow_src.training import ensemble, train\n"
        "from workflow_src.nets.models import ModelSpec, build_model\n"
        "for arch in ('mlp', 'wrn', 'alexnet_small', 'inception_small'):\n"
        "    build_model(ModelSpec((1, 8, 8), 10, 1 if arch == 'wrn' else 4,\n"
        "                10 if arch == 'wrn' else 1, 'relu', True, architecture=arch), 0)\n"
        "package = sys.modules['workflow_src'].__file__.rsplit('__init__.py', 1)[0]\n"
        "print(' '.join(sorted(m.__file__[len(package):].replace('\\\\', '/')\n"
        "                      for m in list(sys.modules.values())\n"
        "                      if m.__name__.startswith('workflow_src'))))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    packages = {name for name in out if name.endswith("__init__.py")}
    for name in packages:
        body = ast.parse((REPO / "workflow_src" / name).read_text()).body
        assert all(isinstance(node, (ast.Expr, ast.Assign))
                   and isinstance(node.value, ast.Constant) for node in body), name
    assert set(out) - packages - {"training/checkpoints.py", "integrity.py"} <= set(NETWORK_CODE), out
    assert "nets/spec.py" in out and "nets/cnn_codes.py" in out, out


# --- a shard's membership and id ------------------------------------------------------------

def grid_runs(**changes):
    return build_run_table(study(grid__seed=[0, 1, 2, 3], **changes))


def test_a_shard_id_is_its_members_whatever_their_order():
    ids = sorted(grid_runs())[:3]
    assert shards.shard_id(ids) == shards.shard_id(ids[::-1]) == stable_hash(sorted(ids))
    assert shards.shard_id(ids) != shards.shard_id(ids[:2])


def test_membership_does_not_depend_on_the_order_of_the_run_table():
    runs = grid_runs()
    shuffled = list(runs.items())
    random.Random(0).shuffle(shuffled)
    for size in (1, 3, "auto"):
        assert (set(shards.plan_shards(dict(shuffled), size))
                == set(shards.plan_shards(runs, size)))
        for members in shards.plan_shards(dict(shuffled), size).values():
            assert members == sorted(members, key=lambda i: (runs[i].seed, i))


STACK_FIELDS = {"width": 32, "depth": 2, "activation": "tanh", "bias": False,
                "optimizer": "rmsprop", "batch_size": 10, "augment": True,
                "architecture": "wrn", "batch_norm": True, "loss": "squared"}
SHAREABLE = {"seed": 9, "learning_rate": 0.5, "max_steps": 11, "weight_decay": 1e-4,
             "lr_schedule": "exponential", "data": replace(DATA, label_noise=0.5),
             "stop_at_target": False}


def test_every_stack_setting_is_tested_below():
    assert set(STACK_FIELDS) == set(shards.STACK_SETTINGS)


@pytest.mark.parametrize("field", [*STACK_FIELDS, "dataset", "n_train", "n_test"])
def test_runs_that_cannot_stack_are_never_in_one_shard(field):
    other = (replace(RUN, data=replace(DATA, **{field: OTHER_DATA[field]}))
             if field in OTHER_DATA else replace(RUN, **{field: STACK_FIELDS[field]}))
    plan = shards.plan_shards({RUN.id: RUN, other.id: other}, size=2)
    assert sorted(plan.values()) == sorted([[RUN.id], [other.id]])


@pytest.mark.parametrize("field", sorted(SHAREABLE))
def test_runs_that_differ_in_what_a_stack_may_hold_share_a_shard(field):
    other = replace(RUN, **{field: SHAREABLE[field]})
    plan = shards.plan_shards({RUN.id: RUN, other.id: other}, size=2)
    assert sorted(map(sorted, plan.values())) == [sorted([RUN.id, other.id])]
