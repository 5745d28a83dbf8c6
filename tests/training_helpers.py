"""Comparing networks trained two ways (a stack against each member alone), shared by the
stacked trainer's tests."""

from __future__ import annotations

import pytest
import torch


def assert_trained_alike(stacked, alone, losses=("train_loss",), rel=1e-10) -> None:
    """Each (model, TrainResult) of ``stacked`` equals the one of ``alone`` at the same
    index: status, steps, exact counts, every evaluation of the curve (accuracies exactly,
    the ``losses`` to ``rel``) and every float64 weight to ``rel``."""
    for k, ((model, result), (model_ref, ref)) in enumerate(zip(stacked, alone, strict=True)):
        where = f"member {k} ({ref.status})"
        assert (result.status, result.steps) == (ref.status, ref.steps), where
        assert (result.train_correct, result.test_correct) == (ref.train_correct,
                                                               ref.test_correct), where
        assert [p["step"] for p in result.curve] == [p["step"] for p in ref.curve], where
        for got, want in zip(result.curve, ref.curve):
            assert (got["train_acc"], got["test_acc"]) == (want["train_acc"],
                                                           want["test_acc"]), where
            for name in losses:
                assert got[name] == pytest.approx(want[name], rel=rel, nan_ok=True), where
        for name, value in model_ref.state_dict().items():
            assert model.state_dict()[name].dtype == torch.float64, f"{where}: {name}"
            torch.testing.assert_close(model.state_dict()[name], value, rtol=rel, atol=rel,
                                       msg=f"{where}: {name}")
