"""PLCC (Pearson linear correlation) as an `evaluate` metric, backed by `taskvec_aesthetics.evaluation.metrics`."""

from __future__ import annotations

import logging

import evaluate

from taskvec_aesthetics.evaluation.metrics import metric_info, plcc

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
PLCC, Pearson's linear correlation coefficient, measures how linearly the predicted scores follow the ground truth.
In image quality and aesthetic assessment it is usually reported after mapping the predictions onto the references
with the 4-parameter logistic of VQEG, f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2, fitted by least squares
(`logistic=True`); this removes a monotone non-linearity between the two scales. The fitted curve may be
decreasing, so the logistic PLCC measures the strength of a monotone relation whatever its direction. If the fit
fails, the linear PLCC is returned and a warning is logged. PLCC lies in [-1, 1] and is NaN (with a warning) when
either input is constant.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): Predicted scores, one per item.
    references (`list` of `float`): Ground-truth scores (e.g. mean opinion scores) for the same items.
    logistic (`bool`, *optional*, defaults to `False`): Fit the 4-parameter logistic before correlating.

Returns:
    plcc (`float`): Pearson's linear correlation coefficient (after the logistic fit if `logistic=True`).

Examples:

    >>> import evaluate
    >>> from taskvec_aesthetics.evaluation.metrics import metric_path
    >>> metric = evaluate.load(metric_path("plcc"))
    >>> round(metric.compute(predictions=[1, 2, 3, 4], references=[2, 4, 6, 8])["plcc"], 6)
    1.0
    >>> result = metric.compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[1, 2, 3, 4], logistic=True)
"""

_CITATION = """\
@article{pearson1895notes,
  title={Notes on Regression and Inheritance in the Case of Two Parents},
  author={Pearson, Karl},
  journal={Proceedings of the Royal Society of London},
  volume={58},
  pages={240--242},
  year={1895}
}
@techreport{vqeg2000final,
  title={Final Report from the Video Quality Experts Group on the Validation of Objective Models of Video
         Quality Assessment},
  author={{Video Quality Experts Group}},
  institution={VQEG},
  year={2000}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Plcc(evaluate.Metric):
    """Pearson linear correlation coefficient, optionally after a 4-parameter logistic fit."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            ["https://en.wikipedia.org/wiki/Pearson_correlation_coefficient"],
        )

    def _compute(self, predictions: list[float], references: list[float], logistic: bool = False) -> dict[str, float]:
        return {"plcc": plcc(predictions, references, logistic=logistic)}
