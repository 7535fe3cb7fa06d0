"""Tiny random models of every encoder family, for fast CPU tests."""

from __future__ import annotations

import copy

import torch
from transformers import CLIPVisionConfig, Dinov2Config, ResNetConfig, SiglipVisionConfig, ViTConfig

from taskvec_aesthetics import AestheticConfig, AestheticModel
from taskvec_aesthetics.efficientnet_lite import EfficientNetLiteConfig

IMAGE_SIZE = 32
_VIT_LIKE = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=IMAGE_SIZE,
    patch_size=8,
)


def encoder_configs() -> dict:
    """One tiny encoder config per adapter family, plus one (ResNet) for the generic fallback."""
    return {
        "clip": CLIPVisionConfig(**_VIT_LIKE),
        "siglip": SiglipVisionConfig(**_VIT_LIKE),
        "dinov2": Dinov2Config(**_VIT_LIKE),
        "vit": ViTConfig(**_VIT_LIKE),
        "efficientnet_lite": EfficientNetLiteConfig(
            image_size=IMAGE_SIZE,
            stem_channels=8,
            hidden_size=32,
            kernel_sizes=[3, 3, 5],
            strides=[1, 2, 2],
            expand_ratios=[1, 2, 2],
            out_channels=[8, 12, 16],
            num_block_repeats=[1, 1, 2],
        ),
        "generic": ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
    }


def tiny_model(family: str = "clip", seed: int = 0, **config_kwargs) -> AestheticModel:
    torch.manual_seed(seed)
    config = AestheticConfig(encoder_config=encoder_configs()[family], head_hidden_size=16, **config_kwargs)
    return AestheticModel(config).eval()


def perturbed_copy(model: AestheticModel, seed: int, scale: float = 0.05, skip_prefix: str | None = None):
    """A copy of ``model`` whose parameters moved by seeded noise: a stand-in for a fine-tuned model."""
    generator = torch.Generator().manual_seed(seed)
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if skip_prefix is None or not name.startswith(skip_prefix):
                param.add_(scale * torch.randn(param.shape, generator=generator))
    return tuned


def pixels(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
