"""Adapter for rule train: train one network, save weights, learning curve and summary."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from workflow_src.adapter import code_version, logged  # noqa: E402
from workflow_src.integrity import open_store, seal_record  # noqa: E402
from workflow_src.models import save_model  # noqa: E402
from workflow_src.runtable import RunSpec  # noqa: E402
from workflow_src.train import resolve_device, train  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    run = RunSpec.from_dict(snakemake.params.run)  # noqa: F821
    device = resolve_device(snakemake.config["training"]["device"])  # noqa: F821
    log(f"run {run.id} on {device}: {run}")
    model, result = train(run, open_store(snakemake.input.data), device, log)  # noqa: F821
    save_model(model, snakemake.output.model)  # noqa: F821
    pd.DataFrame(result.curve).to_csv(snakemake.output.curve, index=False)  # noqa: F821
    summary = {
        "run_id": run.id, "status": result.status, "steps": result.steps,
        "train_acc": result.train_acc, "test_acc": result.test_acc, "gap": result.gap,
        # The counts the three fractions come from (each rounded once, so equal counts tie).
        "train_correct": result.train_correct, "n_train": result.n_train,
        "test_correct": result.test_correct, "n_test": result.n_test,
        "train_loss": result.train_loss, "seconds": result.seconds, "device": str(device),
        "torch": torch.__version__, "code_version": code_version(),
    }
    # Written last, with the checksums of the weights and the curve: it vouches for both.
    seal_record(snakemake.output.summary, summary,  # noqa: F821
                [snakemake.output.model, snakemake.output.curve])  # noqa: F821
    log(f"{result.status} after {result.steps} steps: gap {result.gap:.4f}")
