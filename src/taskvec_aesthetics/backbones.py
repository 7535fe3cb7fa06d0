"""Backbone adapters: one small class per encoder family that exposes its blocks and layer groups.

Every adapter splits an encoder into ``embed`` (pixels to the first hidden state), an ordered list of ``blocks``
and ``pool`` (last hidden state to a feature vector). The split gives two things the rest of the library needs:

* layer groups (``embeddings``, ``block.0`` ... ``block.{n-1}``, ``neck``) for layer-wise coefficients, and
* prefix caching: when a bank leaves the first blocks untouched, their output is computed once per image.

Running ``embed``, every block and ``pool`` reproduces the encoder's own ``pooler_output`` (tested per family).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils.output_capturing import OutputRecorder

from .errors import InputError

if TYPE_CHECKING:
    from transformers import CLIPVisionModel, Dinov2Model, Siglip2VisionModel, SiglipVisionModel, ViTModel

    from .efficientnet_lite import EfficientNetLiteModel

__all__ = [
    "BackboneAdapter",
    "ClipVisionAdapter",
    "SiglipVisionAdapter",
    "Dinov2Adapter",
    "ViTAdapter",
    "EfficientNetLiteAdapter",
    "GenericAdapter",
    "adapter_for",
    "EMBEDDINGS_GROUP",
    "NECK_GROUP",
    "block_group",
]

logger = logging.getLogger(__name__)

EMBEDDINGS_GROUP = "embeddings"
NECK_GROUP = "neck"


def block_group(index: int) -> str:
    """Name of the layer group of block ``index``."""
    return f"block.{index}"


def _first(output: torch.Tensor | tuple) -> torch.Tensor:
    # Layers return a tensor in transformers 5 and a tuple in some families; the hidden state comes first.
    return output[0] if isinstance(output, (tuple, list)) else output


class BackboneAdapter:
    """Splits an encoder into embeddings, ordered blocks and a pooling neck.

    Subclasses define `embedding_modules`, `blocks`, `neck_modules`, `embed` and `pool`. Parameters of the encoder
    that belong to none of them fall into the `neck` group, so every parameter has exactly one group.
    """

    families: tuple[str, ...] = ()

    def __init__(self, encoder: PreTrainedModel) -> None:
        self.encoder = encoder

    # -- structure -------------------------------------------------------------------------------------------
    @property
    def embedding_modules(self) -> Sequence[nn.Module]:
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def group_names(self) -> list[str]:
        """Layer groups of the encoder, from input to output."""
        return [EMBEDDINGS_GROUP, *(block_group(i) for i in range(self.num_blocks)), NECK_GROUP]

    def parameter_groups(self) -> dict[str, str]:
        """Map each encoder parameter name (relative to the encoder) to its layer group."""
        owner: dict[int, str] = {}
        for module in self.embedding_modules:
            owner.update({id(p): EMBEDDINGS_GROUP for p in module.parameters()})
        for index, block in enumerate(self.blocks):
            owner.update({id(p): block_group(index) for p in block.parameters()})
        return {
            name: owner.get(id(param), NECK_GROUP)
            for name, param in self.encoder.named_parameters(remove_duplicate=False)
        }

    # -- computation -----------------------------------------------------------------------------------------
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_block(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return _first(self.blocks[index](hidden, None))

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_blocks(self, hidden: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks ``start`` .. ``stop - 1`` on ``hidden``."""
        stop = self.num_blocks if stop is None else stop
        for index in range(start, stop):
            hidden = self.run_block(index, hidden)
        return hidden

    @contextmanager
    def recording_attentions(self, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
        """Collect, in call order, the attention weights of the encoder's attention layers run inside the block.

        The layers are the ones the encoder declares for `output_attentions` (its `_can_record_outputs`), so the
        weights are the encoder's own; they exist only with `attn_implementation="eager"`.
        """
        recorded: list[torch.Tensor] = []
        handles = []
        if enabled:
            for module, index in self._attention_layers():

                def record(module: nn.Module, args: tuple, output: tuple | torch.Tensor, index: int = index) -> None:
                    weights = output[index] if isinstance(output, (tuple, list)) else None
                    if weights is not None:
                        recorded.append(weights)

                handles.append(module.register_forward_hook(record))
        try:
            yield recorded
        finally:
            for handle in handles:
                handle.remove()

    def _attention_layers(self) -> list[tuple[nn.Module, int]]:
        specs = (getattr(type(self.encoder), "_can_record_outputs", None) or {}).get("attentions", [])
        layers = []
        for spec in specs if isinstance(specs, list) else [specs]:
            if not isinstance(spec, OutputRecorder):  # a class or a class name; the weights come second
                named = isinstance(spec, str)
                # transformers types `target_class` as required, yet builds recorders with None for class names.
                spec = OutputRecorder(None if named else spec, index=1, class_name=spec if named else None)  # type: ignore[arg-type]
            for name, module in self.encoder.named_modules():
                by_class = spec.target_class is not None and isinstance(module, spec.target_class)
                by_name = spec.class_name is not None and name.endswith(spec.class_name)
                in_layer = spec.layer_name is None or f".{spec.layer_name.strip('.')}." in f".{name}."
                if (by_class or by_name) and in_layer:
                    layers.append((module, spec.index))
        return layers

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features of a batch of images: embed, every block, pool."""
        return self.pool(self.forward_blocks(self.embed(pixel_values)))

    @property
    def feature_dim(self) -> int:
        config = self.encoder.config
        return int(getattr(config, "hidden_size"))


class ClipVisionAdapter(BackboneAdapter):
    """CLIP vision tower: embeddings + pre-layernorm, transformer layers, post-layernorm on the CLS token."""

    families = ("clip_vision_model",)
    encoder: CLIPVisionModel

    @property
    def embedding_modules(self) -> Sequence[nn.Module]:
        return [self.encoder.embeddings, self.encoder.pre_layrnorm]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.encoder.layers

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder.pre_layrnorm(self.encoder.embeddings(pixel_values))

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.post_layernorm(hidden[:, 0, :])


class SiglipVisionAdapter(BackboneAdapter):
    """SigLIP vision tower: patch embeddings, transformer layers, post-layernorm and attention-pooling head."""

    families = ("siglip_vision_model", "siglip2_vision_model")
    encoder: SiglipVisionModel | Siglip2VisionModel

    @property
    def embedding_modules(self) -> Sequence[nn.Module]:
        return [self.encoder.embeddings]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.encoder.layers

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder.embeddings(pixel_values)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder.post_layernorm(hidden)
        if getattr(self.encoder, "use_head", False):
            return self.encoder.head(hidden)
        return hidden.mean(dim=1)


class Dinov2Adapter(BackboneAdapter):
    """DINOv2: embeddings, transformer layers, final layernorm, CLS token."""

    families = ("dinov2",)
    encoder: Dinov2Model

    @property
    def embedding_modules(self) -> Sequence[nn.Module]:
        return [self.encoder.embeddings]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.encoder.layer

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder.embeddings(pixel_values)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.layernorm(hidden)[:, 0, :]


class ViTAdapter(BackboneAdapter):
    """ViT: embeddings, transformer layers, final layernorm, then the pooler (or the CLS token without one)."""

    families = ("vit",)
    encoder: ViTModel

    @property
    def embedding_modules(self) -> Sequence[nn.Module]:
        return [self.encoder.embeddings]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.layers

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder.embeddings(pixel_values)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder.layernorm(hidden)
        if self.encoder.pooler is not None:
            return self.encoder.pooler(hidden)
        return hidden[:, 0, :]


class EfficientNetLiteAdapter(BackboneAdapter):
    """Our EfficientNet-Lite: stem, MBConv blocks, 1x1 neck convolution, global average pool."""

    families = ("efficientnet_lite",)
    encoder: EfficientNetLiteModel

    @property
    def embedding_modules(self) -> Sequence[nn.Module]:
        return [self.encoder.stem]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.blocks

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder.stem(pixel_values)

    def run_block(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.blocks[index](hidden)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.neck(hidden).mean(dim=(2, 3))


class GenericAdapter(BackboneAdapter):
    """Fallback for any other transformers vision model: the whole encoder is one block.

    Features are the encoder's ``pooler_output``, or the mean of its last hidden state over all positions when it
    has no pooler. Layer-wise coefficients then have one encoder group (``block.0``); prefix caching is unavailable.
    """

    @property
    def embedding_modules(self) -> Sequence[nn.Module]:
        return []

    @property
    def blocks(self) -> nn.ModuleList:
        return nn.ModuleList([self.encoder])

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values

    def run_block(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        output = self.encoder(pixel_values=hidden)
        pooled = getattr(output, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        last = output.last_hidden_state
        # Channel-first feature maps (convnets) average over space; token sequences average over tokens.
        return last.mean(dim=(2, 3)) if last.dim() == 4 else last.mean(dim=1)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    @property
    def feature_dim(self) -> int:
        config = self.encoder.config
        for name in ("hidden_size", "hidden_sizes", "num_features", "embed_dim"):
            value = getattr(config, name, None)
            if value is not None:
                return int(value[-1] if isinstance(value, (list, tuple)) else value)
        raise InputError(
            f"Cannot tell the feature size of encoder type '{config.model_type}': its config has none of "
            "hidden_size, hidden_sizes, num_features, embed_dim"
        )


_ADAPTERS: tuple[type[BackboneAdapter], ...] = (
    ClipVisionAdapter,
    SiglipVisionAdapter,
    Dinov2Adapter,
    ViTAdapter,
    EfficientNetLiteAdapter,
)


def adapter_for(encoder: PreTrainedModel) -> BackboneAdapter:
    """Return the adapter of ``encoder``'s family, or the generic fallback."""
    model_type = getattr(encoder.config, "model_type", "")
    for adapter_class in _ADAPTERS:
        if model_type in adapter_class.families:
            return adapter_class(encoder)
    logger.info("No dedicated adapter for encoder type '%s'; using the generic one-block adapter", model_type)
    return GenericAdapter(encoder)
