"""Settings of fine-tuning (`FinetuneConfig`) and personalization (`PersonalizerConfig`), in one style.

Each setting is a dataclass field made with [`option`]: its default, a help text, and what it accepts (`choices`, a
numeric `bound`). [`check_fields`] validates every field from that metadata and its annotation, and the command line
derives one flag per field from the same metadata, so a new field is validated and offered as a flag without more
code. This module is torch-free: `--help` of `finetune` and `personalize` does not import torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .coefficients import Coefficients

__all__ = [
    "CANDIDATES",
    "FinetuneConfig",
    "FieldKind",
    "PersonalizerConfig",
    "check_fields",
    "field_kind",
    "option",
]

# -- the style -----------------------------------------------------------------------------------------------------
_BOUNDS = {
    ">0": (lambda v: v > 0, "> 0"),
    ">=0": (lambda v: v >= 0, ">= 0"),
    ">=1": (lambda v: v >= 1, ">= 1"),
    ">=2": (lambda v: v >= 2, ">= 2"),
    "[0,1)": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}


def option(default: Any, help: str, bound: str | None = None, choices: Any = None, **extra: Any) -> Any:
    """A setting: a dataclass field with its ``help``, the numeric ``bound`` it must meet and its ``choices``."""
    if bound is not None and bound not in _BOUNDS:
        raise ValueError(f"bound must be one of {list(_BOUNDS)}, received {bound!r}")
    metadata = {"help": help, "bound": bound, "choices": list(choices) if choices is not None else None, **extra}
    return field(default=default, metadata=metadata)


class FieldKind(NamedTuple):
    """What a field's annotation accepts, read from its text: the first scalar type of its union (None when it
    has none), whether None is accepted, and whether it is a sequence of that type."""

    scalar: type | None
    optional: bool
    sequence: bool


def field_kind(item: dataclasses.Field) -> FieldKind:
    """The [`FieldKind`] of a dataclass field (annotations are read as text: nothing is imported to resolve them)."""
    annotation = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", str(item.type))
    parts, depth, start = [], 0, 0
    for i, char in enumerate(annotation):  # split the union at top-level `|`
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(annotation[start:i].strip())
            start = i + 1
    parts.append(annotation[start:].strip())
    optional = "None" in parts
    for part in (p for p in parts if p != "None"):
        if part in _SCALARS:
            return FieldKind(_SCALARS[part], optional, False)
        for prefix in ("tuple[", "list["):
            inner = part[len(prefix) : -1].split(",")[0].strip() if part.startswith(prefix) else None
            if inner in _SCALARS:
                return FieldKind(_SCALARS[inner], optional, True)
    return FieldKind(None, optional, False)


def check_fields(config: Any) -> None:
    """Validate every field of a settings dataclass from its annotation and [`option`] metadata.

    Raises:
        `TypeError`: a number setting holds something else.
        `ValueError`: a value outside its `choices` or its `bound`.
    """
    name_of = type(config).__name__
    for item in dataclasses.fields(config):
        value, meta = getattr(config, item.name), item.metadata
        kind = field_kind(item)
        if value is None and kind.optional:
            continue
        where = f"{name_of}.{item.name}"
        choices = meta.get("choices")
        if choices and kind.sequence and isinstance(value, (list, tuple)):
            unknown = [v for v in value if v not in choices]
            if unknown or not value:
                raise ValueError(f"{where} must be some of {choices}, received {list(value)}")
        elif choices and isinstance(value, str) and value not in choices:
            raise ValueError(f"{where} must be one of {choices}, received {value!r}")
        if kind.scalar in (int, float) and not kind.sequence:
            allowed = numbers.Real if kind.scalar is float else numbers.Integral
            if isinstance(value, bool) or not isinstance(value, allowed):
                expected = "a number" if kind.scalar is float else "an int"
                raise TypeError(f"{where} must be {expected}, received {value!r}")
            test, text = _BOUNDS.get(meta.get("bound"), (math.isfinite, "finite"))
            if not (math.isfinite(value) and test(value)):
                raise ValueError(f"{where} must be {text}, received {value}")


# -- fine-tuning ---------------------------------------------------------------------------------------------------
FINETUNE_LOSSES = ("auto", "emd", "mse")
PREFIX_CACHING = ("auto", "always", "never")
#: `cache_prefix="auto"` keeps the frozen prefix's output of every image in memory when it takes at most this much.
PREFIX_CACHE_BUDGET_GIB = 2


@dataclass
class FinetuneConfig:
    """Hyperparameters of fine-tuning one database (learning-rate defaults as measured for the bank's models).

    `max_steps`, when set, overrides `epochs`. Steps are optimizer steps; the batch size is per process, so the
    effective batch is `batch_size * gradient_accumulation_steps * num_processes`. `freeze_prefix_blocks=k` freezes
    the embeddings and the first k encoder blocks: they stay equal to the base and run in eval mode (a fixed feature
    extractor, as personalization uses them), the bank leaves them out, and their output can be computed once per
    image (`cache_prefix`).
    """

    output_dir: str | Path = field(metadata={"help": "run folder: model/, finetune_result.json, checkpoints/"})
    lr_encoder: float = option(1e-4, "learning rate of the encoder", ">0")
    lr_head: float = option(1e-3, "learning rate of the score head", ">0")
    weight_decay: float = option(
        0.0, "AdamW decay of matrices (it adds a pull towards zero to every task vector)", ">=0"
    )
    epochs: int = option(1, "passes over the training set", ">0")
    max_steps: int | None = option(None, "optimizer steps; overrides epochs", ">0")
    batch_size: int = option(32, "images per process and micro-batch", ">0")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", ">0")
    warmup_ratio: float = option(0.05, "fraction of the steps of linear warmup before the cosine decay", "[0,1)")
    mixed_precision: str | None = option(
        None, "default: as set by accelerate launch, else no", choices=["no", "bf16", "fp16"]
    )
    max_grad_norm: float | None = option(1.0, "gradient clipping norm (none: no clipping)", ">0")
    loss: str = option(
        "auto", "emd (vote histograms), mse (scores) or auto (emd when histograms exist)", choices=FINETUNE_LOSSES
    )
    rank_loss_weight: float = option(0.0, "weight of a pairwise Bradley-Terry rank loss", ">=0")
    freeze_prefix_blocks: int | None = option(
        None, "freeze the embeddings and the first K encoder blocks (none: train all)", ">=0"
    )
    cache_prefix: str = option(
        "auto",
        "with freeze_prefix_blocks: run the frozen prefix once per image and train on its output, the same result "
        f"faster (auto: when those outputs take at most {PREFIX_CACHE_BUDGET_GIB} GiB per process)",
        choices=PREFIX_CACHING,
    )
    seed: int = option(0, "seed of the data order and dropout")
    eval_every_epoch: bool = option(True, "evaluate after every epoch (always at the end)")
    checkpoint_every: int | None = option(None, "save a resumable checkpoint every N steps and at the end", ">0")
    keep_checkpoints: int | None = option(2, "newest checkpoints kept (none: all)", ">0")
    num_workers: int = option(0, "data loading worker processes per training process", ">=0")
    gradient_checkpointing: bool = option(
        False, "keep only each encoder block's input and recompute the block in the backward pass (less memory)"
    )

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "output_dir": str(self.output_dir)}


# -- personalization -----------------------------------------------------------------------------------------------
#: Candidates of the cross-validated selection, in the order in which ties within a standard error are broken: the
#: softmax(SROCC) mix first (the paper's start; it weighs the same T agreements as the best single model, but averages
#: where the argmax of T noisy values jumps, so it varies least between draws of the ratings), the best single
#: database model, then the other mixes, then learned coefficients. `task`, `layer` and `tensor` are coefficients
#: learned at that granularity.
CANDIDATES: dict[str, str] = {
    "init": "softmax(temperature x SROCC) mix",
    "single": "best single task model",
    "ensemble": "output-ensemble weights as task-wise coefficients",
    "uniform": "uniform mix (c = 1/T)",
    "task": "learned task-wise coefficients",
    "layer": "learned layer-wise coefficients",
    "tensor": "learned tensor-wise coefficients",
    "distil": "coefficients at the granularity distilled from the output ensemble on unlabeled photos",
}
GRANULARITIES = ("task", "layer", "tensor")
#: The candidates that learn coefficients in the network: one per granularity, and the distilled ensemble.
LEARNED_CANDIDATES = (*GRANULARITIES, "distil")
#: The candidates that learn nothing in the network.
SIMPLE_CANDIDATES = tuple(name for name in CANDIDATES if name not in LEARNED_CANDIDATES)
INITS = ("zero_shot_srocc", "uniform")
LOSSES = ("pairwise", "mse", "pairwise+mse")
PAIRINGS = ("all", "half")
GRADIENTS = ("auto", "autograd", "streamed")
SELECTIONS = ("cv", "last")
CRITERIA = ("srocc", "rank_loss")
STARTS = ("ensemble", "init", "best")
DTYPES = ("float32", "bfloat16", "float16", "float64")
_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": dict(
        selection="last",
        granularity="tensor",
        init="zero_shot_srocc",
        temperature=10.0,
        loss="pairwise",
        pairing="half",
        learning_rate=1e-2,
        weight_decay=1e-2,
        steps=500,
        batch_size=32,
    ),
}


@dataclass
class PersonalizerConfig:
    """How coefficients are fitted and chosen. The defaults are our recipe; `from_preset("paper")` is the authors'.

    Each field's help says what it does (`dataclasses.fields(PersonalizerConfig)[i].metadata["help"]`; the command
    line's `personalize --help` lists them all). `init` also accepts given coefficients (`Coefficients` or
    `{task: weight}`).
    """

    selection: str = option(
        "cv",
        "cv: cross-validate the candidates on the rated images and refit the winner on all of them; last: learn "
        "coefficients at the granularity for the given steps and keep the last (the paper's)",
        choices=SELECTIONS,
    )
    candidates: tuple[str, ...] | None = option(
        None,
        "what cv chooses from (default: the softmax mix, the best single model, the output ensemble's weights and "
        "coefficients learned at the granularity, and with unlabeled photos the distilled output ensemble; the "
        "uniform mix measured worst and wins only by chance, so it is left out, but learned coefficients may start "
        "from it)",
        choices=CANDIDATES,
    )
    folds: int = option(5, "K of the K-fold cross-validation (fewer when there are fewer than 2K ratings)", ">=2")
    criterion: str = option(
        "srocc",
        "what chooses among the candidates on the pooled out-of-fold predictions: srocc, or rank_loss (Bradley-Terry "
        "over all pairs, at each candidate's best scale); a learned candidate's start and step count are always "
        "chosen by the rank loss",
        choices=CRITERIA,
    )
    tolerance: float = option(
        1.0,
        "a candidate earlier in the list (the softmax mix first, then the best single model) wins when its criterion "
        "is within this many standard errors of the best one's",
        ">=0",
    )
    start: str = option(
        "best",
        "where learned coefficients start: best (the simple candidate that cross-validates best on the training "
        "units alone), ensemble or init",
        choices=STARTS,
    )
    granularity: str = option(
        "layer",
        "task (T coefficients), layer (one per layer group and task) or tensor (one per parameter tensor and task, "
        "the paper's)",
        choices=GRANULARITIES,
    )
    init: str | Coefficients | Mapping[str, float] = option(
        "zero_shot_srocc",
        "zero_shot_srocc (softmax of temperature x each task model's SROCC on the rated images) or uniform (1 / T)",
        choices=INITS,
    )
    temperature: float = option(10.0, "softmax temperature of the zero-shot init (paper: 10)", ">0")
    loss: str = option(
        "pairwise",
        "pairwise (Bradley-Terry on expected scores), mse (range-normalised scores) or both",
        choices=LOSSES,
    )
    pairing: str = option(
        "all",
        "all: every pair in the batch with different ratings, ties masked out; half: the official code's pairing of "
        "the batch's first half with its second half, ties counted with target 0.5",
        choices=PAIRINGS,
    )
    steps: int = option(50, "optimisation steps (with cv, the most a learned candidate may take)", ">=1")
    learning_rate: float = option(2e-2, "AdamW learning rate of the coefficients", ">0")
    weight_decay: float = option(0.0, "AdamW weight decay (pulls coefficients toward 0, the base model)", ">=0")
    init_pull: float = option(0.0, "weight of an L2 penalty pulling the coefficients toward their start", ">=0")
    batch_size: int = option(32, "images per step (all rated images when there are fewer)", ">=1")
    eval_every: int = option(5, "steps between evaluations of the held-out fold", ">=1")
    distil_weight: float = option(
        1.0,
        "distil: weight of the mean squared error between the merged model's standardized scores on unlabeled photos "
        "and the output ensemble's, next to the rank loss on the ratings",
        ">=0",
    )
    calibrate: bool = option(False, "fit a monotone linear map from predictions onto the user's rating scale")
    adapt_head: bool = option(
        False, "also learn an additive change of the head's last layer, stored with the coefficients"
    )
    head_learning_rate: float = option(1e-3, "Adam learning rate of the adapted head", ">0")
    head_l2: float = option(1e-2, "L2 pull of the adapted head toward the base's", ">=0")
    gradient: str = option(
        "auto",
        "autograd, streamed (exact, memory-lean) or auto (streamed when T x covered values exceeds "
        "streamed_threshold)",
        choices=GRADIENTS,
    )
    streamed_threshold: int = option(200_000_000, "T x covered values above which auto streams", ">=0")
    seed: int = option(0, "seed of the folds, the bootstrap and the minibatch order")
    device: str = option(
        "auto", "where the network runs: auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:N"
    )
    dtype: str = option(
        "auto",
        "precision of the network: bfloat16 or float16 run it under autocast (weights, coefficients and gradients "
        "stay float32), float64 runs a float64 copy; auto: bfloat16 on a GPU, float32 on the CPU",
        choices=("auto", *DTYPES),
    )
    micro_batch_size: int | None = option(
        None,
        "images whose activations are held at once; the step's gradient is still exactly the whole batch's "
        "(default: the whole batch when it fits activation_budget_mb, else the largest micro-batch that does)",
        ">=1",
    )
    activation_budget_mb: float | None = option(
        None,
        "activation memory that chooses the micro-batch when micro_batch_size is not given (default: half the free "
        "memory of a GPU, 1024 MB on the CPU)",
        ">0",
    )
    gradient_checkpointing: bool = option(
        False, "recompute each encoder block in the backward pass (activations of one block; about 1/3 more compute)"
    )
    progress: bool = option(False, "show a progress bar over steps", cli=False)

    def __post_init__(self) -> None:
        if self.candidates is not None:
            self.candidates = tuple(self.candidates)
        check_fields(self)
        if not isinstance(self.init, (str, Mapping)) and not hasattr(self.init, "task_weights"):
            raise TypeError(
                f"init must be one of {INITS}, Coefficients or a dict, received {type(self.init).__name__}"
            )

    @property
    def candidate_names(self) -> tuple[str, ...]:
        """The candidates `"cv"` compares, simplest first."""
        chosen = self.candidates or ("single", "init", "ensemble", self.granularity)
        return tuple(name for name in CANDIDATES if name in chosen)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PersonalizerConfig:
        """`"default"`: our recipe; `"paper"`: the authors' (tensor granularity, softmax(10 x SROCC) init, half-batch
        pairing, AdamW lr 1e-2 with PyTorch's default weight decay, 500 steps, batch 32, last step kept)."""
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "init"}
        data["candidates"] = list(self.candidate_names)
        if isinstance(self.init, str):
            data["init"] = self.init
        elif isinstance(self.init, Mapping):
            data["init"] = dict(self.init)
        else:
            data["init"] = "given"
        return data


PRESETS = tuple(_PRESETS)
