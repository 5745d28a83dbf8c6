"""What every rule script shares: logging to the rule's log file and provenance."""

from __future__ import annotations

import subprocess
import time
import traceback
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

from .. import __version__

# A network's record (results/runs/<run_id>/train.json, written by its shard's train job)
# vouches for model.pt and curve.csv beside it; readers need these keys of it.
TRAIN_SUMMARY_KEYS = ("run_id", "status", "steps", "train_acc", "test_acc", "gap")


@contextmanager
def logged(path: str):
    """Send the job's output and any traceback to its log file (the error still fails the job)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as handle, redirect_stdout(handle), redirect_stderr(handle):
        try:
            yield lambda *parts: print(*parts, flush=True)
        except Exception:
            traceback.print_exc()
            raise


def code_version() -> str:
    """Package version plus the git commit of the checkout (and '-dirty' if it has edits)."""
    root = Path(__file__).resolve().parents[2]  # the checkout
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "workflow_src", "rules", "Snakefile"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return __version__
    return f"{__version__}+g{commit}{'-dirty' if dirty else ''}"


def shard_job(job):
    """(members' RunSpecs, data id -> dataset store path, torch device) for a job of one
    shard (rules train and measure): ``job`` is the script's ``snakemake`` object, whose
    ``params.runs`` are the members and whose inputs ``data_<data id>`` their datasets.
    Sets torch's thread count to the job's threads."""
    import torch

    from ..runtable import RunSpec
    from ..training.train import resolve_device

    torch.set_num_threads(job.threads)
    runs = [RunSpec.from_dict(raw) for raw in job.params.runs]
    data_stores = {key.removeprefix("data_"): path for key, path in job.input.items()
                   if key.startswith("data_")}
    return runs, data_stores, resolve_device(job.config["training"]["device"])


class Progress:
    """Progress lines of a job over many networks, for `tail -f` on its log:

        [3/32 networks, 41 s, ETA 6m 12s] run 0d3231dbf793: converged after 1100 steps

    The ETA assumes the members still to do take as long as the ones done so far took on
    average (members reused from earlier runs count as done but not towards the average).
    """

    def __init__(self, log, total: int, what: str):
        self.log, self.total, self.what = log, total, what
        self.done_count = self.timed = 0
        self.time_spent = 0.0
        self.begin = time.perf_counter()
        self.started = None

    def status(self) -> str:
        elapsed = time.perf_counter() - self.begin
        left = self.total - self.done_count
        eta = (f", ETA {_duration(self.time_spent / self.timed * left)}"
               if self.timed and left else "")
        return f"[{self.done_count}/{self.total} {self.what}, {_duration(elapsed)}{eta}]"

    def start(self, message: str) -> None:
        self.started = time.perf_counter()
        self.log(f"{self.status()} {message}")

    def done(self, message: str) -> None:
        """One more member finished (or reused, when no start() preceded this)."""
        self.done_count += 1
        if self.started is not None:
            self.time_spent += time.perf_counter() - self.started
            self.timed += 1
            self.started = None
        self.log(f"{self.status()} {message}")

    def prefixed(self, prefix: str):
        """A log function for the member in progress: its lines carry the job's status."""
        return lambda *parts: self.log(self.status(), f"{prefix}:", *parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
