"""Outputs that record what they contain, so damage is found before anything uses it.

A job writes its output, then *seals* it; a reader checks the seal before it trusts the
content. There are two kinds of sealed output, and neither depends on the file layout of
one rule, so a job that writes several networks (a shard) seals its outputs the same way:

- a **store** (a directory, e.g. a Zarr store): ``manifest.json`` inside it, written after
  the store is complete, lists every file with its SHA-256 and byte size, and every
  variable with its dimensions and shape;
- a **record** (a JSON file, e.g. ``train.json``), written after the files it vouches for:
  its ``contents`` give the SHA-256 and byte size of each of those files (named relative to
  its folder), and ``record_sha256`` is the SHA-256 of the record's own content without that
  key. A study-level job (statistics, tables, figures) seals all it writes in one record,
  its output named ``seal`` (``results/<study>/seals/<rule>.json``; seal_job).

A missing manifest means the job that wrote the store did not finish (or predates sealing).
Every problem names the file; the error readers raise also names the fix (FIX).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
# Snakemake writes this mtime marker into directory outputs after the job, so it is not content.
NOT_CONTENT = {MANIFEST, ".snakemake_timestamp"}
CONTENTS = "contents"
SELF_SHA = "record_sha256"
FIX = ("Fix: run `snakemake verify` (with this study's --configfile; `make verify` for the "
       "default study), which removes damaged outputs and everything computed from them, "
       "then run `snakemake` again to rebuild them.")


@dataclass(frozen=True)
class Problem:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


class DamagedOutputError(RuntimeError):
    """Raised by every reader of a sealed output; the message lists each damaged file and FIX."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"damaged or missing results:\n{lines}\n{FIX}")


def digest(path) -> dict:
    """{"sha256": hex digest, "bytes": size} of one file, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return {"sha256": sha.hexdigest(), "bytes": os.path.getsize(path)}


def _write_json_atomically(path: Path, content: dict) -> None:
    # A job killed mid-write leaves the temporary file, never a half-written seal.
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(content, indent=2, sort_keys=True))
    os.replace(temporary, path)


def _files_of(store: Path) -> list[str]:
    """Every content file of a store, as sorted POSIX paths relative to it."""
    files = (p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    return sorted(f for f in files if f not in NOT_CONTENT)


def compare(path: Path, label: str, expected: dict) -> list[Problem]:
    """Problems of the file at ``path`` (named ``label`` in them) against ``expected``, its
    digest when written (``digest``: bytes and SHA-256); [] when it is intact."""
    if not path.is_file():
        return [Problem(label, "missing")]
    actual = digest(path)
    if actual["bytes"] != expected["bytes"]:
        return [Problem(label, f"{actual['bytes']} bytes, {expected['bytes']} when written")]
    if actual["sha256"] != expected["sha256"]:
        return [Problem(label, "content changed since it was written (SHA-256 mismatch)")]
    return []


# --- stores ---------------------------------------------------------------------------------

def write_store(ds, store) -> None:
    """Write ``ds`` as a Zarr v3 store at ``store`` (replacing it), then seal it.

    Strings are written as Zarr's ``string`` type (variable-length UTF-8, the ``vlen-utf8``
    codec of the zarr-extensions registry; the v3 core spec has no text type), not as
    NumPy's fixed-width ``<U``, which zarr-python maps to ``fixed_length_utf32``, a type with
    no specification that it warns "may be unreadable by other Zarr libraries". Metadata is
    consolidated into the root ``zarr.json`` so that ``xarray.open_zarr`` reads it without
    falling back (and warning); zarr-python writes that block as ``must_understand: false``,
    which other readers may ignore, and its warning that consolidation is not in the v3 spec
    is the one silenced here.
    """
    import warnings

    from zarr.errors import ZarrUserWarning

    strings = {name: variable.astype(object) for name, variable in ds.variables.items()
               if variable.dtype.kind in "UT"}
    portable = ds.assign({n: v for n, v in strings.items() if n in ds.data_vars})
    portable = portable.assign_coords({n: v for n, v in strings.items() if n in ds.coords})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not",
                                category=ZarrUserWarning)
        portable.to_zarr(store, mode="w", consolidated=True)
    seal_store(store)


def seal_store(store) -> None:
    """Write the manifest of a complete Zarr store: every file's digest, every variable's shape."""
    import xarray as xr

    store = Path(store)
    with xr.open_zarr(store) as ds:
        variables = {name: {"dims": list(var.dims), "shape": list(var.shape)}
                     for name, var in ds.variables.items()}
    files = {name: digest(store / name) for name in _files_of(store)}
    _write_json_atomically(store / MANIFEST, {"files": files, "variables": variables})


def _read_manifest(store: Path) -> tuple[dict | None, list[Problem]]:
    if not store.is_dir():
        return None, [Problem(str(store), "missing")]
    path = store / MANIFEST
    if not path.is_file():
        return None, [Problem(str(store), f"no {MANIFEST}: the job that wrote it did not "
                                           "finish, or it was written before outputs were sealed")]
    try:
        manifest = json.loads(path.read_text())
        return {"files": dict(manifest["files"]), "variables": dict(manifest["variables"])}, []
    except (ValueError, KeyError, TypeError) as err:
        return None, [Problem(str(path), f"unreadable manifest ({type(err).__name__}: {err})")]


def check_store(store) -> list[Problem]:
    """Problems of one store: missing, unsealed, or a file missing, resized, changed or added."""
    store = Path(store)
    manifest, problems = _read_manifest(store)
    if manifest is None:
        return problems
    for name, expected in manifest["files"].items():
        problems += compare(store / name, str(store / name), expected)
    problems += [Problem(str(store / name), "not in the store's manifest")
                 for name in _files_of(store) if name not in manifest["files"]]
    return problems


def open_store(store):
    """The store's Dataset, loaded into memory, after checking it against its manifest."""
    import xarray as xr

    problems = check_store(store)
    if problems:
        raise DamagedOutputError(problems)
    try:
        ds = xr.open_zarr(store).load()
    except Exception as err:  # the files are as written, so this is a store sealed while bad
        raise DamagedOutputError([Problem(str(store), f"unreadable ({type(err).__name__})")]) from err
    shapes = {name: {"dims": list(v.dims), "shape": list(v.shape)} for name, v in ds.variables.items()}
    manifest, _ = _read_manifest(Path(store))
    if shapes != manifest["variables"]:
        raise DamagedOutputError([Problem(str(store), "variables differ from its manifest")])
    return ds


# --- records --------------------------------------------------------------------------------

def _self_sha(record: dict) -> str:
    rest = {key: value for key, value in record.items() if key != SELF_SHA}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def seal_record(path, record: dict, members) -> None:
    """Write ``record`` as JSON at ``path`` with the digests of ``members`` (files already
    written) and its own checksum. Write it last: it vouches for them. Members are named
    relative to the record's folder (a network's train.json names model.pt; a shard's
    record names ../../runs/<run_id>/train.json), so a results tree can move as a whole."""
    path = Path(path)
    sealed = {**record, CONTENTS: {os.path.relpath(m, path.parent): digest(m) for m in members}}
    _write_json_atomically(path, {**sealed, SELF_SHA: _self_sha(sealed)})


def load_record(path: Path, required=()) -> tuple[dict | None, list[Problem]]:
    """(The record, []) if its own content is intact (parsable, keys present, checksum
    matching), else (None, its problems); the files it vouches for are not checked
    (``check_record`` checks them too)."""
    if not path.is_file():
        return None, [Problem(str(path), "missing")]
    text = path.read_text(errors="replace")
    if not text.strip():
        return None, [Problem(str(path), "empty file")]
    try:
        record = json.loads(text)
    except ValueError as err:
        return None, [Problem(str(path), f"not valid JSON, truncated or edited ({err})")]
    if not isinstance(record, dict):
        return None, [Problem(str(path), "not a JSON object")]
    missing = [key for key in (*required, CONTENTS, SELF_SHA) if key not in record]
    if missing:
        return None, [Problem(str(path), f"missing keys {missing}")]
    if record[SELF_SHA] != _self_sha(record):
        return None, [Problem(str(path), "content changed since it was written "
                                         f"({SELF_SHA} mismatch)")]
    return record, []


def check_record(path, required=()) -> list[Problem]:
    """Problems of one record and of every file it vouches for."""
    path = Path(path)
    record, problems = load_record(path, required)
    if record is None:
        return problems
    for name, expected in record[CONTENTS].items():
        member = os.path.normpath(path.parent / name)  # a study seal lists ../stats/<file>
        problems += compare(Path(member), member, expected)
    return problems


def read_record(path, required=()) -> dict:
    """The record's own keys (without the seal), after checking it and every file it vouches for."""
    problems = check_record(path, required)
    if problems:
        raise DamagedOutputError(problems)
    record = json.loads(Path(path).read_text())
    return {key: value for key, value in record.items() if key not in (CONTENTS, SELF_SHA)}


def seal_job(job) -> None:
    """Seal everything a finished study-level job wrote: its output named ``seal`` (rules/
    common.smk, study_seal) becomes the record that vouches for each of its other outputs.
    Call it last, from the rule's script; ``job`` is the script's ``snakemake`` object."""
    record = job.output.seal
    seal_record(record, {"rule": job.rule}, [path for path in job.output if path != record])


def require_member(path: Path, record_path: Path) -> None:
    """Raise unless ``record_path`` is intact and vouches for ``path``'s current content."""
    record, problems = load_record(record_path)
    if record is not None:
        name = os.path.relpath(path, record_path.parent)  # as seal_record named it
        if name not in record[CONTENTS]:
            problems = [Problem(str(record_path), f"does not list {name}")]
        else:
            problems = compare(path, os.path.normpath(path), record[CONTENTS][name])
    if problems:
        raise DamagedOutputError(problems)


def read_csv(path, record):
    """A pandas DataFrame of the CSV file at ``path``, checked against ``record`` (a
    network's train.json, or the seal of the study-level job that wrote it)."""
    import pandas as pd

    path = Path(path)
    require_member(path, Path(record))
    try:
        return pd.read_csv(path)
    except Exception as err:
        raise DamagedOutputError([Problem(str(path), f"unreadable CSV ({type(err).__name__})")]) from err


# --- any output -----------------------------------------------------------------------------

def check(path, required=()) -> list[Problem]:
    """Problems of any sealed output: a JSON file is a record, anything else a store."""
    return check_record(path, required) if str(path).endswith(".json") else check_store(path)


def read_all(reads) -> list:
    """[read(*args) for read, *args in reads], each read one of the checking readers above,
    but raising one DamagedOutputError that lists the problems of every damaged input, so
    one run names them all. Each file is checked once, as it is read."""
    results, problems = [], []
    for read, *args in reads:
        try:
            results.append(read(*args))
        except DamagedOutputError as err:
            problems += err.problems
    if problems:
        raise DamagedOutputError(problems)
    return results


def remove(path) -> bool:
    """Delete a file or directory output; True if something was there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return False
    return True


# --- verify: find damage, remove it and what was computed from it ----------------------------

def repair(expected: list[dict], study_outputs: list[str]) -> list[str]:
    """Check every expected output, remove each damaged or missing one with its dependents.

    expected: one dict per output, {"output": path to check, "required": keys a record must
    have, "removes": the paths deleted with it (itself included), "rebuilds": what the next
    run then redoes, in words, "study_level": true for the outputs of a study-level job}.
    study_outputs: everything the study-level jobs write, removed if any other output was
    damaged or missing: Snakemake runs a job for a missing input only when the job that reads
    it must run anyway, so everything between the removed output and the study's targets
    must go too. A study-level output is a target itself: removing its job's outputs
    suffices, and the next run redoes that job and every job that reads them.
    Everything is checked before anything is removed, so a removed dependent is never
    reported as missing. Returns the report, line by line.
    """
    found = [(entry, check(entry["output"], entry.get("required", ()))) for entry in expected]
    damaged = [(entry, problems) for entry, problems in found if problems]
    lines = [f"verify: {len(expected) - len(damaged)} of {len(expected)} expected outputs OK"]
    for entry, problems in damaged:
        lines += [f"{'MISSING' if p.what == 'missing' else 'DAMAGED'} {p}" for p in problems]
        removed = [path for path in entry["removes"] if remove(path)]
        lines.append(f"  removed: {', '.join(removed) or 'nothing (already gone)'}")
        lines.append(f"  next run: {entry['rebuilds']}")
    if not all(entry.get("study_level") for entry, _ in damaged):
        removed = [path for path in study_outputs if remove(path)]
        lines.append(f"removed study outputs computed from them: {', '.join(removed) or 'none present'}")
    if damaged:
        lines.append("Run `snakemake` (with this study's --configfile) to rebuild exactly these.")
    return lines
