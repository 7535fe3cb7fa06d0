"""All aesthetic-score correlation metrics in one `evaluate` metric, backed by `taskvec_aesthetics.evaluation.metrics`."""

from __future__ import annotations

import logging

import evaluate

from taskvec_aesthetics.evaluation.metrics import correlation_report, metric_info

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
The standard report of image aesthetic and quality assessment in one call, validating the inputs once:
SROCC (Spearman), PLCC (Pearson, plain and after the 4-parameter VQEG logistic fit), KRCC (Kendall tau-b) and
pairwise ranking accuracy (fraction of reference-untied pairs ordered correctly, prediction ties counting half).
Each value equals the one of the single-metric modules `srocc`, `plcc`, `krcc` and `pairwise_accuracy`. When an
input is constant, the undefined values are NaN and one warning is issued.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): Predicted scores, one per item.
    references (`list` of `float`): Ground-truth scores (e.g. mean opinion scores or a user's ratings).

Returns:
    srocc (`float`): Spearman's rank-order correlation coefficient.
    plcc (`float`): Pearson's linear correlation coefficient.
    plcc_logistic (`float`): PLCC after the 4-parameter logistic fit.
    krcc (`float`): Kendall's tau-b.
    pairwise_accuracy (`float`): Fraction of correctly ordered pairs.

Examples:

    >>> import evaluate
    >>> from taskvec_aesthetics.evaluation.metrics import metric_path
    >>> metric = evaluate.load(metric_path("aesthetic_correlation"))
    >>> results = metric.compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[1, 2, 3, 4])
    >>> sorted(results)
    ['krcc', 'pairwise_accuracy', 'plcc', 'plcc_logistic', 'srocc']
"""

_CITATION = """\
@inproceedings{yun2024scaling,
  title={Scaling Up Personalized Image Aesthetic Assessment via Task Vector Customization},
  author={Yun, Jooyeol and Choo, Jaegul},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2024}
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
class AestheticCorrelation(evaluate.Metric):
    """SROCC, PLCC (plain and logistic), KRCC and pairwise accuracy between predictions and references."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        return correlation_report(predictions, references)
