"""Configuration of an aesthetic scorer: which encoder, which head, and (for exports) which base and bank."""

from __future__ import annotations

import logging
import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from . import efficientnet_lite  # noqa: F401  (registers the default encoder with AutoConfig)
from .constants import CONFIG_FILE, FORMAT_VERSION
from .errors import ConfigError, InputError
from .hub.references import Reference

__all__ = ["AestheticConfig", "EXPORT_FORMAT_VERSION"]

logger = logging.getLogger(__name__)

#: Version of the on-disk formats written by this library (an alias of `constants.FORMAT_VERSION`).
EXPORT_FORMAT_VERSION = FORMAT_VERSION
#: Largest |bound| of `score_range`: scores are float32, and rating scales are far smaller (1-5, 1-10, 0-100).
MAX_SCORE_MAGNITUDE = 1e6
#: Smallest span of `score_range` relative to its magnitude: below it float32 scores of different images coincide.
MIN_RELATIVE_SPAN = 1e-4


def _check_score_range(score_range: Any) -> list[float]:
    """`score_range` as `[low, high]`: finite, low < high, within +-MAX_SCORE_MAGNITUDE, with a resolvable span."""
    try:
        low, high = (float(v) for v in score_range)
    except (TypeError, ValueError):
        raise ConfigError(f"score_range must be [low, high], two numbers, received {score_range!r}") from None
    magnitude = max(abs(low), abs(high), 1.0)
    if not (math.isfinite(low) and math.isfinite(high)) or magnitude > MAX_SCORE_MAGNITUDE:
        raise ConfigError(
            f"score_range must be finite numbers within +-{MAX_SCORE_MAGNITUDE:g} (scores are float32), received "
            f"{score_range!r}"
        )
    if not high - low > MIN_RELATIVE_SPAN * magnitude:
        raise ConfigError(
            f"score_range must be [low, high] with low < high and a span of at least {MIN_RELATIVE_SPAN:g} of its "
            f"magnitude (else different images get one float32 score), received {score_range!r}"
        )
    return [low, high]


@strict(accept_kwargs=True)
class AestheticConfig(PreTrainedConfig):
    r"""
    Configuration of an [`AestheticModel`]: a vision encoder followed by the paper's 10-bin score head.

    Args:
        encoder_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the image encoder: any transformers vision config (CLIP vision, SigLIP vision, DINOv2,
            ViT, ...) or ours (`efficientnet_lite`, the default). A dict must carry its `model_type`.
        head_hidden_size (`int`, defaults to 512):
            Width of the head's hidden layer.
        head_dropout (`float`, defaults to 0.5):
            Dropout of the head (active in training mode only).
        num_bins (`int`, defaults to 10):
            Number of score bins; the expected bin index (1..num_bins) is mapped onto `score_range`.
        score_range (`list[float]`, defaults to `[1.0, 10.0]`):
            Scale of the predicted scores.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the head's initial weights.
        base_model (`dict`, *optional*):
            Only for coefficients-only exports: where the base model lives (`repo_id` or `path`, `revision`) and its
            `fingerprint`.
        bank (`dict`, *optional*):
            The task-vector bank a personalized model refers to (`repo_id` or `path`, `revision`, `base_fingerprint`,
            `tasks`).
    """

    model_type = "taskvec_aesthetic"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="efficientnet_lite")}

    encoder_config: dict | PreTrainedConfig | None = None
    head_hidden_size: int = 512
    head_dropout: float | int = 0.5
    num_bins: int = 10
    score_range: list[float] | tuple[float, float] = (1.0, 10.0)
    initializer_range: float = 0.02
    base_model: dict[str, Any] | None = None
    bank: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.encoder_config, dict) and "model_type" not in self.encoder_config:
            raise InputError(
                "encoder_config dict must name its `model_type` (e.g. 'clip_vision_model'); received keys "
                f"{sorted(self.encoder_config)}"
            )
        self.score_range = _check_score_range(self.score_range)
        if self.num_bins < 2:
            raise InputError(f"num_bins must be at least 2, received {self.num_bins}")
        if not 0.0 <= float(self.head_dropout) < 1.0:
            raise InputError(f"head_dropout must be in [0, 1), received {self.head_dropout}")
        super().__post_init__(**kwargs)

    @property
    def is_coefficients_export(self) -> bool:
        """True when this config describes a coefficients-only personalized model (base + bank + coefficients)."""
        return self.base_model is not None

    @property
    def base_reference(self) -> Reference | None:
        """`base_model` as a [`Reference`] (None when the config records none)."""
        return Reference.from_dict(self.base_model, CONFIG_FILE, "base_model")

    @property
    def bank_reference(self) -> Reference | None:
        """`bank` as a [`Reference`] whose fingerprint is that of the base the bank was built on (None: none)."""
        return Reference.from_dict(self.bank, CONFIG_FILE, "bank", fingerprint_key="base_fingerprint")
