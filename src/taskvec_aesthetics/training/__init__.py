"""Producing a bank: per-database fine-tuning (one or many GPUs with Accelerate) and building the bank from its runs."""

from ..utils.deprecation import moved_names

__getattr__ = moved_names(__name__)  # the previous release's `taskvec_aesthetics.training` module
