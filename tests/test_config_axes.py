"""Config validation of axes that combine (workflow_src/config.py, runtable.architecture_problem):
a WRN's width x depth, an architecture x a dataset's input size, crops x input size, a
schedule x its settings, in one block or across blocks; each refusal names the block and the
key, and what one block may do another may not."""

from __future__ import annotations

import copy

import pytest
from workflow_helpers import TINY_CONFIG

from workflow_src.config import ConfigError, validate_config
from workflow_src.runtable import MIN_CNN_SIDE, architecture_problem, build_run_table

BLOCK = TINY_CONFIG["grid"]


@pytest.mark.parametrize("depth, allowed", [
    (4, False), (9, False), (10, True), (11, False), (12, False), (16, True), (22, True),
    (28, True), (34, True), (35, False)])
def test_a_wrn_depth_is_6n_plus_4_with_at_least_one_block(depth, allowed):
    problem = architecture_problem("wrn", (1, 28, 28), 1, depth)
    assert (problem is None) is allowed, problem
    if not allowed:
        assert f"depth {depth} is not a Wide ResNet depth 6n + 4" in problem


@pytest.mark.parametrize("side, allowed", [(MIN_CNN_SIDE - 1, False), (MIN_CNN_SIDE, True)])
@pytest.mark.parametrize("architecture", ["wrn", "alexnet_small", "inception_small"])
def test_the_convolutional_networks_take_inputs_down_to_the_minimum_side(architecture, side,
                                                                        allowed):
    for shape in ((1, side, side), (3, side, 32), (3, 32, side)):
        assert (architecture_problem(architecture, shape, 1, 10) is None) is allowed, shape
    assert architecture_problem("mlp", (1, side, side), 1, 1) is None


def blocks(*changes) -> dict:
    """TINY_CONFIG with one grid block per change (each applied to the tiny block)."""
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"] = [{**copy.deepcopy(BLOCK), **change} for change in changes]
    return config


def refusal(config) -> str:
    with pytest.raises(ConfigError) as raised:
        validate_config(config)
    return str(raised.value)


WRN = {"architecture": ["wrn"], "width": [1]}


@pytest.mark.parametrize("bad", [0, 1])
def test_a_wrn_depth_fine_in_one_block_is_refused_in_another_naming_that_block(bad):
    good, wrong = {**WRN, "depth": [10, 16]}, {**WRN, "depth": [12]}
    message = refusal(blocks(*((wrong, good) if bad == 0 else (good, wrong))))
    assert message.startswith(f"config key grid[{bad}] (block {bad + 1}): architecture wrn on "
                              "digits: depth 12 is not a Wide ResNet depth"), message


def test_every_width_and_depth_pair_of_a_block_is_checked():
    """One width, two depths: the second depth is checked too (pairs, not zipped lists)."""
    message = refusal(blocks({**WRN, "width": [1, 2], "depth": [10]},
                             {**WRN, "width": [1], "depth": [10, 12]}))
    assert message.startswith("config key grid[1] (block 2)") and "depth 12" in message


def test_an_mlp_depth_that_is_no_wrn_depth_is_fine_beside_a_wrn_block():
    config = validate_config(blocks({"depth": [1, 2]}, {**WRN, "depth": [10]}))
    assert {(run.architecture, run.depth) for run in build_run_table(config).values()} == {
        ("mlp", 1), ("mlp", 2), ("wrn", 10)}


def test_an_mlp_and_a_wrn_in_one_block_share_its_depths():
    message = refusal(blocks({"architecture": ["mlp", "wrn"], "width": [1], "depth": [1, 10]}))
    assert message.startswith("config key grid[0] (block 1): architecture wrn on digits: "
                              "depth 1 is not"), message


def test_a_single_block_is_named_grid():
    config = copy.deepcopy(TINY_CONFIG)
    config["grid"] = {**copy.deepcopy(BLOCK), **WRN, "depth": [12]}
    assert refusal(config).startswith("config key grid: architecture wrn on digits")


@pytest.mark.parametrize("architecture, dataset, allowed", [
    ("inception_small", "cifar10", True), ("wrn", "svhn", True),
    ("inception_small", "fashion_mnist", False), ("wrn", "mnist", False),
    ("alexnet_small", "digits", False), ("mlp", "cifar10", False)])
def test_crops_need_a_convolutional_network_on_inputs_larger_than_28_px(architecture, dataset,
                                                                       allowed):
    crop = {"augment": ["crop"], "architecture": [architecture], "dataset": [dataset],
            "width": [1], "depth": [10]}
    config = blocks({}, crop)
    if allowed:
        validate_config(config)
    else:
        message = refusal(config)
        assert message.startswith("config key grid[1] (block 2): augment crop") and \
            f"{architecture} on {dataset}" in message, message


def test_a_multistep_schedule_needs_milestones_in_the_block_that_uses_it():
    message = refusal(blocks({}, {"lr_schedule": ["multistep"]}))
    assert message.startswith("config key grid[1] (block 2): lr_schedule multistep needs "
                              "training.lr_milestones")
    config = blocks({}, {"lr_schedule": ["multistep"]})
    config["training"]["lr_milestones"] = [10]
    runs = build_run_table(validate_config(config)).values()
    assert {run.lr_milestones for run in runs} == {(), (10,)}
