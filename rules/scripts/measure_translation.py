"""Adapter for rule measure_translation: transitions and Jacobian along translations."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (snakemake)
from workflow_src.adapter import load_trained, logged, first_test_points  # noqa: E402
from workflow_src.integrity import write_store  # noqa: E402
from workflow_src.metrics.per_run import translation_metrics  # noqa: E402

with logged(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    settings = sm.params.settings
    model, data, device = load_trained(sm)
    x, _ = first_test_points(data, settings["n_points"], device)
    out = translation_metrics(model, x, settings["k_sampled"], settings["jacobian_positions"],
                              sm.config["measure"]["chunk_size"])
    log(out)
    write_store(out, sm.output[0])
