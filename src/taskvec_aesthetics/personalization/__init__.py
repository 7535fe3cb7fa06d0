"""Fitting one person's coefficients: inputs, the personalizer, model selection, optimisation, reports, exports, many users."""

from ..utils.deprecation import moved_names

__getattr__ = moved_names(__name__)  # the previous release's `taskvec_aesthetics.personalization` module
