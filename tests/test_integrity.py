"""Sealed outputs: every kind of damage is found, and its error names the file and the fix."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from workflow_src import integrity
from workflow_src.integrity import DamagedOutputError
from workflow_src.nets.models import ModelSpec, build_model, save_model
from workflow_src.nets.checked import load_checked


@pytest.fixture
def store(tmp_path):
    """A sealed two-variable Zarr store, chunked so that 'loss' has several chunk files."""
    path = tmp_path / "jacobian-0123abcd.zarr"
    ds = xr.Dataset({"loss": ("point", np.linspace(0.0, 1.0, 40)),
                     "jacobian_norm": ("point", np.arange(40.0))},
                    coords={"point": np.arange(40)})
    ds.to_zarr(path, mode="w", encoding={name: {"chunks": (10,)} for name in ds.data_vars})
    integrity.seal_store(path)
    return path, ds


@pytest.fixture
def run(tmp_path):
    """A run folder as rule train leaves it: model.pt, curve.csv, then the sealing train.json."""
    folder = tmp_path / "runs" / "0123456789ab"
    folder.mkdir(parents=True)
    spec = ModelSpec(input_shape=(1, 8, 8), n_classes=10, width=16, depth=1, activation="relu",
                     bias=True)
    save_model(build_model(spec, seed=0), folder / "model.pt")
    pd.DataFrame({"step": [0, 25], "train_acc": [0.1, 0.9]}).to_csv(folder / "curve.csv", index=False)
    integrity.seal_record(folder / "train.json", {"run_id": "0123456789ab", "status": "converged"},
                          [folder / "model.pt", folder / "curve.csv"])
    return folder


def chunk_files(store, variable):
    return sorted(p for p in (store / variable).rglob("*") if p.is_file() and p.name != "zarr.json")


def assert_names_file_and_fix(error: DamagedOutputError, path):
    message = str(error)
    assert str(path) in message, message
    assert "snakemake verify" in message and "make verify" in message, message
    assert "weights_only" not in message, message


def test_clean_outputs_have_no_problems_and_read_back(store, run):
    path, ds = store
    assert integrity.check(path) == [] and integrity.check(run / "train.json", ["status"]) == []
    xr.testing.assert_identical(integrity.open_store(path), ds)
    assert integrity.read_record(run / "train.json") == {"run_id": "0123456789ab",
                                                         "status": "converged"}
    model = load_checked(run / "model.pt", run / "train.json")
    assert model.spec.width == 16
    curve = integrity.read_csv(run / "curve.csv", run / "train.json")
    assert curve["step"].tolist() == [0, 25]


def test_manifest_digests_are_the_files_sha256_and_size(store, run):
    path, _ = store
    manifest = json.loads((path / integrity.MANIFEST).read_text())
    chunk = chunk_files(path, "loss")[0]
    entry = manifest["files"][chunk.relative_to(path).as_posix()]
    assert entry == {"sha256": hashlib.sha256(chunk.read_bytes()).hexdigest(),
                     "bytes": len(chunk.read_bytes())}
    assert manifest["variables"]["loss"] == {"dims": ["point"], "shape": [40]}
    record = json.loads((run / "train.json").read_text())
    model_bytes = (run / "model.pt").read_bytes()
    assert record["contents"]["model.pt"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()


def test_missing_chunk(store):
    path, _ = store
    chunk = chunk_files(path, "loss")[1]
    chunk.unlink()  # zarr itself would read this chunk as fill values (NaN) without a word
    assert [str(p) for p in integrity.check(path)] == [f"{chunk}: missing"]
    with pytest.raises(DamagedOutputError) as error:
        integrity.open_store(path)
    assert_names_file_and_fix(error.value, chunk)


def test_missing_variable_folder(store):
    path, _ = store
    shutil.rmtree(path / "jacobian_norm")
    problems = integrity.check(path)
    assert problems and all(p.path.startswith(str(path / "jacobian_norm")) for p in problems)
    with pytest.raises(DamagedOutputError) as error:
        integrity.open_store(path)
    assert_names_file_and_fix(error.value, path / "jacobian_norm" / "zarr.json")


def test_missing_store(store):
    path, _ = store
    shutil.rmtree(path)
    with pytest.raises(DamagedOutputError) as error:
        integrity.open_store(path)
    assert f"{path}: missing" in str(error.value)
    assert_names_file_and_fix(error.value, path)


def test_unsealed_store_is_incomplete(store):
    path, _ = store
    (path / integrity.MANIFEST).unlink()  # as a job killed between to_zarr and seal_store leaves it
    with pytest.raises(DamagedOutputError, match="did not finish") as error:
        integrity.open_store(path)
    assert_names_file_and_fix(error.value, path)


def test_corrupt_chunk_bytes(store):
    path, _ = store
    chunk = chunk_files(path, "loss")[0]
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte flipped
    chunk.write_bytes(bytes(data))
    with pytest.raises(DamagedOutputError, match="SHA-256 mismatch") as error:
        integrity.open_store(path)
    assert_names_file_and_fix(error.value, chunk)


def test_missing_model(run):
    (run / "model.pt").unlink()
    assert [str(p) for p in integrity.check(run / "train.json")] == [f"{run / 'model.pt'}: missing"]
    with pytest.raises(DamagedOutputError) as error:
        load_checked(run / "model.pt", run / "train.json")
    assert_names_file_and_fix(error.value, run / "model.pt")


def test_garbage_model(run):
    (run / "model.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(DamagedOutputError, match="bytes") as error:
        load_checked(run / "model.pt", run / "train.json")
    assert_names_file_and_fix(error.value, run / "model.pt")


def test_garbage_model_sealed_as_such_never_suggests_weights_only(run):
    # Even a record that vouches for garbage must not surface PyTorch's weights_only hint.
    (run / "model.pt").write_bytes(b"not a checkpoint at all")
    integrity.seal_record(run / "train.json", {"run_id": "0123456789ab"},
                          [run / "model.pt", run / "curve.csv"])
    with pytest.raises(DamagedOutputError, match="not a checkpoint") as error:
        load_checked(run / "model.pt", run / "train.json")
    assert_names_file_and_fix(error.value, run / "model.pt")
    assert error.value.__cause__ is None and error.value.__suppress_context__


@pytest.mark.parametrize("damage, why", [
    (lambda text: "", "empty file"),
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: text.replace('"converged"', '"diverged"'), "record_sha256 mismatch"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "status"}),
     "missing keys ['status']"),
], ids=["empty", "truncated", "edited", "missing_key"])
def test_damaged_train_json(run, damage, why):
    record = run / "train.json"
    record.write_text(damage(record.read_text()))
    assert why in str(integrity.check(record, ["status"])[0])
    with pytest.raises(DamagedOutputError, match=why.replace("[", r"\[")) as error:
        integrity.read_record(record, ["status"])
    assert_names_file_and_fix(error.value, record)
    # The files it vouched for can no longer be trusted either.
    for read in (lambda: load_checked(run / "model.pt", record),
                 lambda: integrity.read_csv(run / "curve.csv", record)):
        with pytest.raises(DamagedOutputError) as error:
            read()
        assert_names_file_and_fix(error.value, record)


def test_read_all_lists_every_damaged_output(store, run):
    path, _ = store
    assert len(integrity.read_all([(integrity.open_store, path),
                                   (integrity.read_record, run / "train.json")])) == 2
    chunk = chunk_files(path, "loss")[0]
    chunk.unlink()
    (run / "curve.csv").write_text("step\n")
    with pytest.raises(DamagedOutputError) as error:
        integrity.read_all([(integrity.open_store, path),
                            (integrity.read_record, run / "train.json")])
    assert_names_file_and_fix(error.value, chunk)
    assert str(run / "curve.csv") in str(error.value)


def test_repair_removes_damaged_outputs_with_dependents_and_study_outputs(store, run, tmp_path):
    path, _ = store
    dependent = tmp_path / "bounds.zarr"
    shutil.copytree(path, dependent)  # an intact store computed from `path`
    study = tmp_path / "metrics.zarr"
    study.mkdir()
    expected = [
        {"output": str(run / "train.json"), "required": ["status"],
         "removes": [str(run / name) for name in ("model.pt", "curve.csv", "train.json")],
         "rebuilds": "network retrains"},
        {"output": str(path), "removes": [str(path), str(dependent)], "rebuilds": "re-measured"},
        {"output": str(dependent), "removes": [str(dependent)], "rebuilds": "re-measured"},
    ]
    assert integrity.repair(expected, [str(study)]) == [
        "verify: 3 of 3 expected outputs OK"]
    assert study.exists()  # nothing damaged: nothing removed
    chunk_files(path, "loss")[0].unlink()
    report = integrity.repair(expected, [str(study)])
    assert report[0] == "verify: 2 of 3 expected outputs OK"
    assert not any(str(dependent) in line for line in report if line.startswith(("MISSING", "DAMAGED")))
    assert any(line.startswith("MISSING") and str(path) in line for line in report)
    assert not path.exists() and not dependent.exists() and not study.exists()
    assert (run / "model.pt").exists() and (run / "train.json").exists()


class Outputs(list):
    """A script's snakemake.output, as seal_job reads it: every path, and each by name."""


@pytest.fixture
def study_job(tmp_path):
    """A study-level job as rule correlate leaves it: two tables, then its seal, which names
    them relative to results/<study>/seals/."""
    study = tmp_path / "results" / "study"
    (study / "stats").mkdir(parents=True)
    (study / "seals").mkdir()
    tables = [study / "stats" / "correlations.csv", study / "stats" / "networks.csv"]
    pd.DataFrame({"indicator": ["jacobian_norm"], "value": [0.98]}).to_csv(tables[0], index=False)
    pd.DataFrame({"run_id": ["0123456789ab"], "gap": [0.1]}).to_csv(tables[1], index=False)
    seal = study / "seals" / "correlate.json"
    job = SimpleNamespace(rule="correlate", output=Outputs(str(p) for p in [*tables, seal]))
    job.output.seal = str(seal)
    integrity.seal_job(job)
    return Path(job.output.seal), tables


def test_a_study_job_seals_every_output_relative_to_its_record(study_job):
    seal, (correlations, _) = study_job
    record = json.loads(seal.read_text())
    assert record["rule"] == "correlate"
    assert set(record["contents"]) == {"../stats/correlations.csv", "../stats/networks.csv"}
    assert integrity.check_record(seal, ["rule"]) == []
    assert integrity.read_csv(correlations, seal)["value"].tolist() == [0.98]


@pytest.mark.parametrize("damage, why", [
    (lambda path: path.write_text(path.read_text().replace("0.98", "0.1234")), "bytes"),
    (lambda path: path.write_bytes(b"\xff\xfe\x00garbage\x9c" * 8), "bytes"),
    (lambda path: path.write_text(path.read_text().replace("0.98", "0.99")), "SHA-256 mismatch"),
], ids=["edited", "garbage", "edited_same_size"])
def test_a_damaged_study_table_is_refused_naming_it_and_the_fix(study_job, damage, why):
    # As summarize reads correlations.csv: garbage must not surface as a UnicodeDecodeError,
    # an edited value must not be summarized.
    seal, (correlations, _) = study_job
    damage(correlations)
    with pytest.raises(DamagedOutputError, match=why) as error:
        integrity.read_csv(correlations, seal)
    assert_names_file_and_fix(error.value, correlations)
    assert [p.path for p in integrity.check_record(seal, ["rule"])] == [str(correlations)]


def test_repair_of_a_study_level_job_removes_its_outputs_only(study_job, store, tmp_path):
    """A damaged study-level output takes its job's outputs (the next run redoes the job and
    its readers); any other damaged output takes every study output with it."""
    seal, tables = study_job
    path, _ = store
    other = tmp_path / "results" / "study" / "summary.csv"
    other.write_text("indicator\n")
    job = {"output": str(seal), "required": ["rule"], "study_level": True,
           "removes": [*map(str, tables), str(seal)], "rebuilds": "correlate"}
    shard = {"output": str(path), "removes": [str(path)], "rebuilds": "re-measured"}
    tables[0].write_text("edited\n")
    report = integrity.repair([job, shard], [*map(str, tables), str(seal), str(other)])
    assert report[0] == "verify: 1 of 2 expected outputs OK"
    assert not any(p.exists() for p in (*tables, seal)) and other.exists() and path.exists()
    assert not any(line.startswith("removed study outputs") for line in report)
    chunk_files(path, "loss")[0].unlink()
    integrity.repair([shard], [str(other)])
    assert not other.exists() and not path.exists()
