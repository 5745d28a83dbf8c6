"""Statistics stage: which indicators track the generalization gap (docs/science.md §6).

Every public function takes the aggregate dataset or the network table built from it and
returns a tidy DataFrame, one row per estimate, that the workflow writes as CSV under
``results/<study>/stats/``:

- ``tables``: ``network_table`` (one row per run) and ``converged``;
- ``correlation``: Kendall τ, Spearman ρ, Pearson r with bootstrap CIs (Jiang et al. 2020);
- ``granulated``: the granulated Kendall coefficient Ψ (Jiang et al. 2020, §4);
- ``regression``: gap on log(indicator) with a dataset fixed effect (Novak et al. 2018);
- ``paired``: matched-pairs Wilcoxon tests of one hyperparameter, multiple-testing control;
- ``per_point``: does the indicator flag misclassified test points (Novak et al. 2018);
- ``scoring``: Jiang et al.'s conditional mutual information score K
  (``conditional_mi_score``) and Dziugaite et al.'s robust sign-error (``robust_sign_error``);
- ``summary``: indicators ranked by |Ψ| and |τ|, with each indicator's expected sign, whether
  τ has it, and K and the robust sign-error of the oriented indicator (``scores``,
  ``expected_signs``), the fraction of networks whose optimizer converged and whether the
  indicator is constant (``indicator_notes``, ``optimizer_flags``);
- ``datasets``: every table within each dataset as well as pooled (column ``dataset``);
- ``ellipse_order``: do ellipse metrics order by kind of anchors as Novak et al. report.
"""

import sys
import types
from importlib import import_module

# Each name is imported from its module on first use (PEP 562), so a job imports only the
# modules it calls: the figures read tables and summary without scipy.stats' correlation
# code, statsmodels or scikit-learn, which take seconds to import.
_MODULES = {
    "correlations": "correlation",
    "kind_ordering": "ellipse_order",
    "granulated_kendall": "granulated",
    **dict.fromkeys(["correct_multiple", "factor_comparisons", "factor_tests",
                     "matched_pairs", "paired_factor_tests"], "paired"),
    "per_point_misclassification": "per_point",
    "ols_gap_on_log_indicator": "regression",
    **dict.fromkeys(["conditional_mi_score", "robust_sign_error"], "scoring"),
    **dict.fromkeys(["expected_signs", "indicator_notes", "optimizer_flags", "scores",
                     "summary", "summary_by_dataset"], "summary"),
    **dict.fromkeys(["per_dataset", "pooled", "store_groups", "table_groups"], "datasets"),
    **dict.fromkeys(["converged", "converged_runs", "indicator_names", "network_table"],
                    "tables"),
}


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_MODULES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_MODULES])


class _Package(types.ModuleType):
    """``stats.summary`` stays the function: importing the module ``summary`` would bind
    the module to the package's attribute of that name (sys.modules keeps the module)."""

    def __setattr__(self, name, value):
        if name in _MODULES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "conditional_mi_score",
    "converged",
    "converged_runs",
    "correct_multiple",
    "correlations",
    "expected_signs",
    "factor_comparisons",
    "factor_tests",
    "granulated_kendall",
    "indicator_names",
    "indicator_notes",
    "kind_ordering",
    "matched_pairs",
    "network_table",
    "ols_gap_on_log_indicator",
    "optimizer_flags",
    "paired_factor_tests",
    "per_dataset",
    "per_point_misclassification",
    "pooled",
    "robust_sign_error",
    "scores",
    "store_groups",
    "summary",
    "summary_by_dataset",
    "table_groups",
]
