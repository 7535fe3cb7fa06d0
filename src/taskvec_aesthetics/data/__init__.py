"""Image aesthetics and quality databases, and a person's own ratings, as `datasets.Dataset`s.

```python
>>> from taskvec_aesthetics.data import get_database_spec, load_database, load_ratings
>>> spec = get_database_spec("KonIQ-10k")
>>> spec.kind, spec.score_range, spec.has_distribution
('iqa', (0.0, 100.0), True)
>>> train = load_database("koniq10k", "/data/koniq10k", split="train")
>>> mine = load_ratings("my_photos/")  # metadata.csv with file_name,score
```
"""

from __future__ import annotations

from .loading import LEVELS, SPLITS, TEST_FRACTION, VALIDATION_FRACTION, build_dataset, load_database
from .personalized import FLICKR_AES_TEST_WORKERS
from .ratings import is_preferences_file, load_preferences, load_ratings
from .records import DatabaseFormatError, Issue
from .registry import DATABASES, DatabaseKind, DatabaseSpec, get_database_spec, list_databases

__all__ = [
    "DATABASES",
    "FLICKR_AES_TEST_WORKERS",
    "LEVELS",
    "SPLITS",
    "TEST_FRACTION",
    "VALIDATION_FRACTION",
    "DatabaseFormatError",
    "DatabaseKind",
    "DatabaseSpec",
    "Issue",
    "build_dataset",
    "get_database_spec",
    "list_databases",
    "is_preferences_file",
    "load_database",
    "load_preferences",
    "load_ratings",
]
