"""The Hub face shared by models and banks: finding folders or repositories, downloading, pushing, references, model cards."""

from ..utils.deprecation import moved_names

__getattr__ = moved_names(__name__)  # the previous release's `taskvec_aesthetics.hub` module
