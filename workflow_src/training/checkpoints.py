"""Checkpoints of a network in training, so that a killed job resumes where it was.

(Not to be confused with ``train.Checkpoint``, one evaluation of the learning curve.)

A checkpoint is the whole state of ``train.train``'s loop after some step: the weights, the
optimizer's state, the batch-order and augmentation generator (the only random stream the
loop draws from: initialisation uses its own seeded CPU generator, and nothing in training
draws from torch's global generator or NumPy), the epoch's order and position in it, the
step, the learning curve so far, the status if the step decided one, and the seconds spent.
Resuming from it gives exactly the network an uninterrupted run gives.

Files, in the network's own folder ``results/runs/<run_id>/`` (not Snakemake outputs, so
Snakemake's removal of a failed job's outputs leaves them in place):

- ``checkpoint-<step>.pt``: the state, ``torch.save``d as tensors (generator states are byte
  tensors), plain containers, numbers and strings, and loaded with ``weights_only=True``,
  which refuses any other pickled object;
- ``checkpoint.json``: which of them is the latest, its SHA-256 and size, and the identity
  of the network it belongs to (run id, training code, dataset, device type, torch version,
  checkpoint format and this module's code).

A new checkpoint is written to a temporary file in the same folder, fsynced and renamed into
place; then ``checkpoint.json`` is replaced the same way, and only then is the previous
checkpoint deleted, so a kill at any moment leaves a pointer to a complete checkpoint (or
none). A checkpoint whose identity differs, whose digest does not match, or that cannot be
loaded or does not fit the network is ignored with a log line and removed, and training
starts from the beginning.

When the network is saved (and sealed by its train.json), its checkpoints are deleted,
except those at the steps of ``keep``, which stay as ``checkpoint-<step>.pt`` and are listed
with their digests in ``checkpoints.json`` (a sealed record, integrity.py).

Stopping on a signal: a training job runs inside ``stop_on_signals()``, which turns SIGTERM
(what SLURM sends at a job's time limit, ``KillWait`` seconds, 30 by default, before
SIGKILL; and what ``scancel`` and most schedulers send) and SIGINT into a request. The
training loops check ``stop_requested()`` after every step: they finish the step, save a
checkpoint of it whatever ``every`` says (``CheckpointStore.stop``), and raise
``TrainingStopped``, so the re-run resumes from the step the signal arrived at instead of the
last periodic checkpoint. A member that has just finished is saved first; the job stops
before the next member.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import torch

from .. import integrity

FORMAT = 1  # bump when the content of a checkpoint changes meaning
POINTER = "checkpoint.json"
KEPT = "checkpoints.json"
FILE = re.compile(r"^checkpoint-(\d+)\.pt$")
PARTIAL = re.compile(r"^\.checkpoint.*\.partial$")
CODE_SHA = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stop = {"signal": None}  # the signal that asked training to stop, once one has


class TrainingStopped(BaseException):
    """Training stopped on a signal after saving a checkpoint. A BaseException, so that the
    handlers that catch a member's failure (``except Exception``) let it through: the job
    stops, it is not a failure of the member."""

    def __init__(self, signum: int, step: int | None = None):
        self.signum, self.step = signum, step
        where = f" after step {step}, checkpoint saved" if step is not None else ""
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}")


def stop_requested() -> int | None:
    """The signal that asked training to stop (inside ``stop_on_signals``), else None."""
    return _stop["signal"]


def raise_if_stop_requested() -> None:
    """Between networks: stop the job if a signal asked to (nothing is in progress)."""
    if _stop["signal"] is not None:
        raise TrainingStopped(_stop["signal"])


@contextmanager
def stop_on_signals(signals=STOP_SIGNALS):
    """While inside, the signals only record a request to stop (see the module doc); the
    previous handlers come back on leaving. Main thread only (Python's signal rule)."""
    def request(signum, frame):
        _stop["signal"] = signum
    previous = {signum: signal.signal(signum, request) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop["signal"] = None


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"checkpoint-{step}.pt"


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, write) -> None:
    """``write(handle)`` into a temporary file beside ``path``, fsync it, rename it to path."""
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _reason(err: Exception) -> str:
    """The line of a loading error that says what was refused (PyTorch's weights_only
    message, which also suggests loading the file unsafely, is many lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line
             or line.startswith("WeightsUnpickler error")]
    return f"{type(err).__name__}: {(named or lines or [''])[0]}"


class CheckpointStore:
    """The checkpoints of one network in ``folder``.

    identity: what the network is (``train_shard`` gives the run id, training-code and
    dataset digests, device type and torch version); a checkpoint is used only if it was
    written for exactly this. every: steps between checkpoints (0: none but ``keep``).
    keep: steps whose checkpoints are written too and kept when the network is finished.
    """

    def __init__(self, folder, identity: dict, every: int, keep=(), log=print):
        self.folder = Path(folder)
        self.identity = {**identity, "format": FORMAT, "checkpoint_code": CODE_SHA}
        self.every, self.keep, self.log = int(every), frozenset(int(s) for s in keep), log
        self.current: Path | None = None  # the checkpoint the pointer names

    def due(self, step: int) -> bool:
        return (self.every > 0 and step % self.every == 0) or step in self.keep

    # --- reading --------------------------------------------------------------------------

    def load(self) -> dict | None:
        """The latest checkpoint's state if it is intact and this network's, else None (after
        removing whatever checkpoint files lie in the folder, with a log line saying why)."""
        pointer = self.folder / POINTER
        if not pointer.is_file():
            self.clear()
            return None
        try:
            record = json.loads(pointer.read_text())
            step, name, expected = int(record["step"]), str(record["file"]), record["digest"]
            identity = dict(record["identity"])
        except (ValueError, KeyError, TypeError) as err:
            return self.discard(f"{pointer} is unreadable ({type(err).__name__})")
        if identity != self.identity:
            differing = sorted(k for k in {*identity, *self.identity}
                               if identity.get(k) != self.identity.get(k))
            return self.discard(f"it was written for another network or code (differs in "
                                f"{', '.join(differing)})")
        path = self.folder / name
        if FILE.match(name) is None or int(FILE.match(name).group(1)) != step:
            return self.discard(f"{pointer} names {name!r} for step {step}")
        problems = integrity.compare(path, str(path), expected)
        if problems:
            return self.discard(f"it is damaged ({'; '.join(map(str, problems))})")
        try:
            # weights_only: tensors, containers, numbers and strings only, never code.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            return self.discard(f"{path} cannot be loaded safely ({_reason(err)})")
        if (not isinstance(state, dict) or state.get("identity") != self.identity
                or state.get("step") != step):
            return self.discard(f"{path} does not hold the state its pointer describes")
        self.current = path
        return state

    def discard(self, why: str) -> None:
        """Log why the checkpoint is not used, remove every checkpoint file; returns None."""
        self.log(f"checkpoint ignored and removed: {why}; training from the start")
        self.clear()
        return None

    # --- writing --------------------------------------------------------------------------

    def save(self, step: int, state: dict) -> None:
        """Write the state after ``step`` as the latest checkpoint (atomically), then delete
        the one it replaces unless that one's step is kept."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = checkpoint_path(self.folder, step)
        payload = {**state, "identity": self.identity, "step": step}
        _write_atomically(path, lambda handle: torch.save(payload, handle))
        record = {"step": step, "file": path.name, "digest": integrity.digest(path),
                  "identity": self.identity}
        _write_atomically(self.folder / POINTER,
                          lambda handle: handle.write(json.dumps(record, indent=2,
                                                                 sort_keys=True).encode()))
        _fsync_directory(self.folder)
        previous, self.current = self.current, path
        if previous is not None and previous != path and not self._kept(previous):
            previous.unlink(missing_ok=True)

    def stop(self, step: int, state) -> None:
        """A stop was requested after ``step``: save its state (``state()`` builds it) unless
        that step's checkpoint is already the latest, then raise TrainingStopped."""
        if self.current != checkpoint_path(self.folder, step):
            self.save(step, state())
        self.log(f"stop requested ({signal.Signals(stop_requested()).name}): checkpoint "
                 f"saved at step {step}; the re-run resumes from it")
        raise TrainingStopped(stop_requested(), step)

    # --- when the network is saved ----------------------------------------------------------

    def finish(self) -> list[int]:
        """After the network is sealed: delete its checkpoints but the kept ones, which
        ``checkpoints.json`` then lists; returns the kept steps."""
        kept = sorted((int(FILE.match(p.name).group(1)), p) for p in self._files()
                      if self._kept(p))
        if kept:
            integrity.seal_record(self.folder / KEPT,
                                  {"identity": self.identity, "steps": [s for s, _ in kept]},
                                  [p for _, p in kept])
        else:
            (self.folder / KEPT).unlink(missing_ok=True)
        (self.folder / POINTER).unlink(missing_ok=True)
        for path in self._files():
            if not self._kept(path):
                path.unlink()
        self._remove_partials()
        self.current = None
        return [s for s, _ in kept]

    def tidy(self) -> None:
        """For a network reused as it is: finish what a job killed between sealing the
        network and finishing its checkpoints left (nothing, if no pointer is left)."""
        if (self.folder / POINTER).exists():
            self.finish()

    def clear(self) -> None:
        """Remove every checkpoint file of the folder, kept ones and their record included
        (they belong to a network that is about to be trained again)."""
        if not self.folder.is_dir():
            return
        for path in (*self._files(), self.folder / POINTER, self.folder / KEPT):
            path.unlink(missing_ok=True)
        self._remove_partials()
        self.current = None

    # --- helpers ----------------------------------------------------------------------------

    def _kept(self, path: Path) -> bool:
        match = FILE.match(path.name)
        return match is not None and int(match.group(1)) in self.keep

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if FILE.match(p.name))

    def _remove_partials(self) -> None:
        for path in self.folder.iterdir():
            if PARTIAL.match(path.name):
                path.unlink(missing_ok=True)
