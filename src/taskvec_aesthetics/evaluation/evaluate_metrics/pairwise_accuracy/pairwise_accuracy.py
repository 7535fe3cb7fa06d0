"""Pairwise ranking accuracy as an `evaluate` metric, backed by `taskvec_aesthetics.evaluation.metrics`."""

from __future__ import annotations

import logging

import evaluate

from taskvec_aesthetics.evaluation.metrics import metric_info, pairwise_accuracy

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Pairwise ranking accuracy answers "given two images, does the model prefer the one people prefer?". Over all pairs
of items whose references differ, it is the fraction whose predicted order agrees; a tie in the predictions counts
half, and pairs tied in the references are skipped. It lies in [0, 1]: 0.5 is chance (and the value for constant
predictions), 1 a perfect order. It is NaN (with a warning) when the references are constant. It equals
(1 + S / N) / 2 with S = concordant - discordant pairs and N = pairs untied in the references, and is computed in
O(n log n) through Kendall's tau-b.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): Predicted scores, one per item.
    references (`list` of `float`): Ground-truth scores (e.g. a user's ratings) for the same items.

Returns:
    pairwise_accuracy (`float`): Fraction of correctly ordered pairs, prediction ties counting half.

Examples:

    >>> import evaluate
    >>> from taskvec_aesthetics.evaluation.metrics import metric_path
    >>> metric = evaluate.load(metric_path("pairwise_accuracy"))
    >>> round(metric.compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[1, 2, 3, 4])["pairwise_accuracy"], 6)
    0.833333
"""

_CITATION = """\
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
class PairwiseAccuracy(evaluate.Metric):
    """Fraction of reference-untied pairs that the predictions order correctly (prediction ties count half)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        return {"pairwise_accuracy": pairwise_accuracy(predictions, references)}
