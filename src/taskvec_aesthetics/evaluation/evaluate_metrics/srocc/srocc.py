"""SROCC (Spearman rank-order correlation) as an `evaluate` metric, backed by `taskvec_aesthetics.evaluation.metrics`."""

from __future__ import annotations

import logging

import evaluate

from taskvec_aesthetics.evaluation.metrics import metric_info, srocc

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
SROCC, Spearman's rank-order correlation coefficient, is the Pearson correlation of the ranks of the predictions
and of the references (tied values get their average rank). It measures how monotonically the predicted scores
follow the ground truth, whatever their scale, and is the main metric of image aesthetic and quality assessment.
It lies in [-1, 1]; 1 means the same order. It is NaN (with a warning) when either input is constant.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): Predicted scores, one per item.
    references (`list` of `float`): Ground-truth scores (e.g. mean opinion scores) for the same items.

Returns:
    srocc (`float`): Spearman's rank-order correlation coefficient.

Examples:

    >>> import evaluate
    >>> from taskvec_aesthetics.evaluation.metrics import metric_path
    >>> metric = evaluate.load(metric_path("srocc"))
    >>> round(metric.compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[1, 2, 3, 4])["srocc"], 6)
    0.8
"""

_CITATION = """\
@article{spearman1904proof,
  title={The Proof and Measurement of Association between Two Things},
  author={Spearman, Charles},
  journal={The American Journal of Psychology},
  volume={15},
  number={1},
  pages={72--101},
  year={1904}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Srocc(evaluate.Metric):
    """Spearman rank-order correlation coefficient between predictions and references."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            ["https://en.wikipedia.org/wiki/Spearman%27s_rank_correlation_coefficient"],
        )

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        return {"srocc": srocc(predictions, references)}
