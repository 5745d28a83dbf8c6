"""A saved network, loaded only when the record that vouches for it says it is intact."""

from __future__ import annotations

from pathlib import Path

from .. import integrity
from .models import load_model


def load_checked(path, record, device="cpu"):
    """The network saved at ``path`` (models.load_model: torch.load with weights_only=True,
    in eval mode), checked against ``record``, the record that vouches for it (a network's
    train.json). Raises integrity.DamagedOutputError naming the file if it is missing,
    changed since it was sealed, or not a saved network of this project."""
    path = Path(path)
    integrity.require_member(path, Path(record))
    try:
        return load_model(path, device)
    except Exception as err:
        # `from None`: PyTorch's message suggests weights_only=False, the wrong fix here.
        raise integrity.DamagedOutputError([integrity.Problem(
            str(path), f"not a checkpoint of this project's networks ({type(err).__name__})")
        ]) from None
