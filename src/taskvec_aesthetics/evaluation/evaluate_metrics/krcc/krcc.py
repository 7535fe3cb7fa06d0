"""KRCC (Kendall rank correlation, tau-b) as an `evaluate` metric, backed by `taskvec_aesthetics.evaluation.metrics`."""

from __future__ import annotations

import logging

import evaluate

from taskvec_aesthetics.evaluation.metrics import krcc, metric_info

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
KRCC, Kendall's rank correlation coefficient, compares the order of every pair of items: (concordant - discordant)
pairs, normalised. This is the tau-b variant, which adjusts the normalisation for ties in either input. It lies in
[-1, 1] and is NaN (with a warning) when either input is constant.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): Predicted scores, one per item.
    references (`list` of `float`): Ground-truth scores (e.g. mean opinion scores) for the same items.

Returns:
    krcc (`float`): Kendall's tau-b.

Examples:

    >>> import evaluate
    >>> from taskvec_aesthetics.evaluation.metrics import metric_path
    >>> metric = evaluate.load(metric_path("krcc"))
    >>> round(metric.compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[1, 2, 3, 4])["krcc"], 6)
    0.666667
"""

_CITATION = """\
@article{kendall1938new,
  title={A New Measure of Rank Correlation},
  author={Kendall, Maurice G.},
  journal={Biometrika},
  volume={30},
  number={1/2},
  pages={81--93},
  year={1938}
}
@article{kendall1945treatment,
  title={The Treatment of Ties in Ranking Problems},
  author={Kendall, Maurice G.},
  journal={Biometrika},
  volume={33},
  number={3},
  pages={239--251},
  year={1945}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Krcc(evaluate.Metric):
    """Kendall rank correlation coefficient (tau-b) between predictions and references."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            ["https://en.wikipedia.org/wiki/Kendall_rank_correlation_coefficient"],
        )

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        return {"krcc": krcc(predictions, references)}
