"""Adapter for rule measure_ellipses: Jacobian profiles and transitions along ellipses."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
import torch  # noqa: E402

from workflow_src.adapter import load_trained, logged  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402
from workflow_src.metrics.per_run import ellipse_metrics  # noqa: E402
from workflow_src.models import build_model  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    settings = sm.params.settings
    model, data, device = load_trained(sm)
    train_x = torch.as_tensor(data["x_train"].values, device=device)  # (N, C, H, W)
    # Anchors come from the *clean* classes: "same class" means the same true class.
    train_y = torch.as_tensor(data["y_train_clean"].values, device=device)
    # Training starts from build_model(spec, run seed), so that call rebuilds the network's
    # initial weights exactly (tests/test_train.py checks it).
    initial = (build_model(model.spec, sm.params.run_seed, device).eval()
               if settings["at_initialization"] else None)
    out = ellipse_metrics(model, train_x, train_y, settings["per_kind"],
                          settings["n_positions"], settings["seed"],
                          sm.config["measure"]["chunk_size"], initial_model=initial)
    log(out)
    write_store(out, sm.output[0])
