"""Task vectors: the bank of per-database weight deltas, coefficients, merging them into a model, fingerprints, similarity."""
