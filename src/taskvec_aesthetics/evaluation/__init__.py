"""Measuring scores: correlation metrics, their `evaluate` modules, and writing scores to files."""
