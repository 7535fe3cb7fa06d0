"""Small shared tools with no knowledge of models: atomic files and checksums, progress bars, config fields."""
