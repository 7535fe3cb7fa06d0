"""Personalization: fit task-vector coefficients c[g, t] to one person's ratings, choosing by cross-validation.

Personalization is a function of the *set* of ratings: rows are put in a canonical order (image content hash, then
score) and an image rated twice is averaged, before any split or minibatch.

Simple and learned answers compete on the same deterministic K folds of the rated images (never any other image):
the best single task model, the softmax(SROCC) mix, the output ensemble's weights used as coefficients, the uniform
mix, and learned coefficients (their step count chosen inside the folds). The candidate that cross-validates best
wins, unless one earlier in that list is within one standard error of it; the winner is then refitted on all the
ratings, and its cross-validated SROCC is the user's estimate of how well the model ranks their photos.

Everything shares one encoding: the frozen prefix of the encoder (blocks no task vector touches) runs once per image,
each task model scores the rated images once (`[T, N]`), and every optimisation step runs only the rest of the
network with merged parameters theta_0 + sum_t c[g(p), t] * tau_t[p], as a functional call, so the base model is
never modified.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from .bank import TaskVectorBank
from .coefficients import GRANULARITIES, Coefficients
from .losses import pairwise_rank_loss
from .merging import (
    CoefficientLayout,
    coefficient_layout,
    functional_forward,
    merge_parameters,
    streamed_coefficient_grad,
)
from .metrics import srocc
from .ratings_input import as_ratings, canonical, image_key, rows_by_user

if TYPE_CHECKING:
    from .modeling import AestheticModel

__all__ = [
    "CANDIDATES",
    "PersonalizerConfig",
    "Personalizer",
    "PersonalizationReport",
    "PersonalizationResult",
    "EncodedRatings",
    "pairwise_rank_loss",
    "fit_many",
    "resolve_device",
]

logger = logging.getLogger(__name__)

#: Candidates of the cross-validated selection, in the order in which ties within a standard error are broken: the
#: best single database model first (the answer a user could find alone), then mixes of the task models, then learned
#: coefficients. `task`, `layer` and `tensor` are coefficients learned at that granularity.
CANDIDATES: dict[str, str] = {
    "single": "best single task model",
    "init": "softmax(temperature x SROCC) mix",
    "ensemble": "output-ensemble weights as task-wise coefficients",
    "uniform": "uniform mix (c = 1/T)",
    "task": "learned task-wise coefficients",
    "layer": "learned layer-wise coefficients",
    "tensor": "learned tensor-wise coefficients",
}
INITS = ("zero_shot_srocc", "uniform")
LOSSES = ("pairwise", "mse", "pairwise+mse")
PAIRINGS = ("all", "half")
GRADIENTS = ("auto", "autograd", "streamed")
SELECTIONS = ("cv", "last")
CRITERIA = ("srocc", "rank_loss")
STARTS = ("ensemble", "init")
#: The output-ensemble fit works on `[N, T]` numbers: a few hundred Adam steps cost milliseconds.
ENSEMBLE_STEPS, ENSEMBLE_LEARNING_RATE, ENSEMBLE_RIDGE = 200, 0.05, 0.01
BOOTSTRAP_SAMPLES = 200
#: Activations an encoder block keeps for its backward pass, in hidden states of its input (transformer blocks: the
#: layer norms, q/k/v, attention output and probabilities, the 4x MLP before and after its activation), an estimate
#: that sets the micro-batch from `activation_budget_mb`.
ACTIVATIONS_PER_BLOCK = 24


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from a name; `"auto"` or None is the GPU when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', received {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but this machine has no usable GPU; use 'cpu' or 'auto'")
    return resolved


class _BackwardInside(torch.nn.Module):
    """Runs the network and its backward pass within one call, so that inside `functional_call` a checkpointed block
    is recomputed with the same substituted parameters as its forward used."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, objective: Any, inputs: dict[str, Any], autocast: Any) -> torch.Tensor:
        with autocast:
            scores = self.network(**inputs).scores
        value = objective(scores.float())
        value.backward()
        return value.detach()


@dataclass
class PersonalizerConfig:
    """How coefficients are fitted and chosen. The defaults are our recipe; `from_preset("paper")` is the authors'.

    Args:
        selection: `"cv"`: cross-validate `candidates` on the rated images and refit the winner on all of them;
            `"last"`: learn coefficients at `granularity` for `steps` steps and keep the last (the paper's).
        candidates: what `"cv"` chooses from (see `CANDIDATES`); by default the four simple ones and coefficients
            learned at `granularity` (learned task-wise coefficients, `"task"`, measured no better and cost as much).
        folds: K of the K-fold cross-validation (fewer when there are fewer than 2K ratings).
        criterion: what selects a candidate and a step count on the pooled out-of-fold predictions: `"rank_loss"`
            (the Bradley-Terry loss over all pairs; continuous, so it separates candidates on few ratings; measured
            better than SROCC on the planted benchmark at k = 10 and for the worst user) or `"srocc"`.
        tolerance: a candidate earlier in `CANDIDATES` (the best single model first) wins when within this many
            standard errors (of the paired difference, bootstrapped over the rated images) of the best one.
        start: where learned coefficients start: `"ensemble"` (the output-ensemble weights) or `"init"`.
        granularity: `"task"` (T coefficients), `"layer"` (one per layer group and task) or `"tensor"`
            (one per parameter tensor and task, the paper's).
        init: `"zero_shot_srocc"` (softmax of temperature x each task model's SROCC on the rated images),
            `"uniform"` (1 / T), or given coefficients (`Coefficients` or `{task: weight}`).
        temperature: softmax temperature of the zero-shot init (paper: 10).
        loss: `"pairwise"` (Bradley-Terry on expected scores), `"mse"` (on range-normalised scores) or both.
        pairing: `"all"`: every pair in the batch with different ratings, ties masked out; `"half"`: the official
            code's pairing of the batch's first half with its second half, ties counted with target 0.5.
        steps: optimisation steps (with `"cv"`, the most a learned candidate may take).
        learning_rate: AdamW learning rate of the coefficients.
        weight_decay: AdamW weight decay (pulls coefficients toward 0, i.e. toward the base model).
        init_pull: weight of an L2 penalty pulling the coefficients toward their initial values.
        batch_size: images per step (all rated images when there are fewer).
        eval_every: steps between evaluations of the held-out fold.
        calibrate: fit a monotone linear map from predictions onto the user's rating scale.
        adapt_head: also learn an additive change of the head's last layer (5,130 values for 10 bins), stored with
            the coefficients; `head_learning_rate` is its Adam learning rate and `head_l2` an L2 pull toward 0.
        gradient: `"autograd"`, `"streamed"` (exact, memory-lean; see `merging.streamed_coefficient_grad`) or
            `"auto"` (streamed when T x covered values exceeds `streamed_threshold`).
        seed: seed of the folds, the bootstrap and the minibatch order.
        device: where the network runs: `"auto"` (the GPU when there is one, else the CPU), `"cpu"`, `"cuda"`,
            `"cuda:1"`, ...
        dtype: precision of the network's computation. `"bfloat16"` / `"float16"` run it under autocast (weights,
            coefficients and gradients stay float32; bfloat16 is the one to use on a GPU); `"float64"` runs a float64
            copy (for exact comparisons); `"float32"` (default) as is.
        micro_batch_size: images whose activations are held at once when computing a step's gradient. A step still
            uses the whole batch and its gradient is exactly the full batch's: its scores are computed first without
            a graph, then d loss / d scores is backpropagated micro-batch by micro-batch. `None` (default): the whole
            batch when its estimated activations fit `activation_budget_mb` (small models and inputs), else the
            largest micro-batch that does.
        activation_budget_mb: memory for a micro-batch's activations when `micro_batch_size` is `None` (an
            estimate from the encoder's hidden-state size and the number of blocks the bank touches).
        gradient_checkpointing: keep only each block's input during a step and recompute the block in the backward
            pass (about a third more compute; activations of one block instead of all), so larger micro-batches fit.
        progress: show a progress bar over steps.
    """

    selection: str = "cv"
    candidates: tuple[str, ...] | None = None
    folds: int = 5
    criterion: str = "rank_loss"
    tolerance: float = 1.0
    start: str = "ensemble"
    granularity: str = "layer"
    init: str | Coefficients | Mapping[str, float] = "zero_shot_srocc"
    temperature: float = 10.0
    loss: str = "pairwise"
    pairing: str = "all"
    steps: int = 50
    learning_rate: float = 2e-2
    weight_decay: float = 0.0
    init_pull: float = 0.0
    batch_size: int = 32
    eval_every: int = 5
    calibrate: bool = False
    adapt_head: bool = False
    head_learning_rate: float = 1e-3
    head_l2: float = 1e-2
    gradient: str = "auto"
    streamed_threshold: int = 200_000_000
    seed: int = 0
    device: str = field(default="auto", metadata={"help": "auto (a GPU when there is one), cpu, cuda, cuda:N"})
    dtype: str = field(
        default="float32",
        metadata={"help": "precision of the network: float32, bfloat16 or float16 (autocast; bfloat16 on a GPU)"},
    )
    micro_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "images whose activations are held at once; the gradient is exactly the batch's "
            "(default: the whole batch when it fits activation_budget_mb)"
        },
    )
    activation_budget_mb: int = field(
        default=1024, metadata={"help": "activation memory that chooses the micro-batch when it is not given"}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute each encoder block in the backward pass (less memory, ~1/3 slower)"},
    )
    progress: bool = False

    def __post_init__(self) -> None:
        _one_of("selection", self.selection, SELECTIONS)
        _one_of("criterion", self.criterion, CRITERIA)
        _one_of("start", self.start, STARTS)
        _one_of("granularity", self.granularity, GRANULARITIES)
        _one_of("loss", self.loss, LOSSES)
        _one_of("pairing", self.pairing, PAIRINGS)
        _one_of("gradient", self.gradient, GRADIENTS)
        if self.candidates is not None:
            self.candidates = tuple(self.candidates)
            unknown = sorted(set(self.candidates) - set(CANDIDATES))
            if unknown or not self.candidates:
                raise ValueError(f"candidates must be some of {list(CANDIDATES)}, received {list(self.candidates)}")
        if isinstance(self.init, str):
            _one_of("init", self.init, INITS)
        elif not isinstance(self.init, (Coefficients, Mapping)):
            raise TypeError(
                f"init must be one of {INITS}, Coefficients or a dict, received {type(self.init).__name__}"
            )
        for name in ("steps", "batch_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, received {getattr(self, name)}")
        if int(self.folds) < 2:
            raise ValueError(f"folds must be >= 2, received {self.folds}")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, received {getattr(self, name)}")
        if min(self.weight_decay, self.init_pull, self.head_l2, self.tolerance) < 0 or self.head_learning_rate <= 0:
            raise ValueError(
                "weight_decay, init_pull, head_l2 and tolerance must be >= 0 and head_learning_rate > 0; received "
                f"{self.weight_decay}, {self.init_pull}, {self.head_l2}, {self.tolerance}, {self.head_learning_rate}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or float64, received {self.dtype!r}")
        if self.micro_batch_size is not None and (
            isinstance(self.micro_batch_size, bool)
            or not isinstance(self.micro_batch_size, int)
            or self.micro_batch_size < 1
        ):
            raise ValueError(f"micro_batch_size must be an integer >= 1 or None, received {self.micro_batch_size!r}")
        if not self.activation_budget_mb > 0:
            raise ValueError(f"activation_budget_mb must be > 0, received {self.activation_budget_mb}")
        resolve_device(self.device)  # a clear error now rather than at the first step

    @property
    def candidate_names(self) -> tuple[str, ...]:
        """The candidates `"cv"` compares, simplest first."""
        chosen = self.candidates or ("single", "init", "ensemble", "uniform", self.granularity)
        return tuple(name for name in CANDIDATES if name in chosen)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PersonalizerConfig:
        """`"default"`: our recipe; `"paper"`: the authors' (tensor granularity, softmax(10 x SROCC) init, half-batch
        pairing, AdamW lr 1e-2 with PyTorch's default weight decay, 500 steps, batch 32, last step kept)."""
        presets = {
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
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "init"}
        data["candidates"] = list(self.candidate_names)
        if isinstance(self.init, Coefficients):
            data["init"] = "given"
        elif isinstance(self.init, Mapping):
            data["init"] = dict(self.init)
        else:
            data["init"] = self.init
        return data


def _one_of(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, received {value!r}")


@dataclass
class EncodedRatings:
    """Rated images after the frozen prefix, with their ratings: the only input the optimisation needs.

    Args:
        prefix: `[N, ...]` output of the frozen prefix (see `Personalizer.encode`).
        ratings: `[N]` ratings.
        keys: one content hash per image (see `ratings_input.image_key`); by default a hash of its prefix row.
        duplicates: rows merged into others because they rated the same image.
    """

    prefix: torch.Tensor
    ratings: torch.Tensor
    keys: list[str] | None = None
    duplicates: int = 0

    def __len__(self) -> int:
        return int(self.ratings.shape[0])

    def subset(self, index: torch.Tensor) -> EncodedRatings:
        keys = None if self.keys is None else [self.keys[i] for i in index.tolist()]
        return EncodedRatings(self.prefix[index], self.ratings[index], keys, self.duplicates)

    def canonical(self) -> EncodedRatings:
        """The same ratings ordered by (image key, rating), each image once (its ratings averaged)."""
        keys = self.keys or [
            hashlib.sha256(row.cpu().contiguous().numpy().tobytes()).hexdigest() for row in self.prefix
        ]
        if len(keys) != len(self):
            raise ValueError(f"received {len(keys)} image keys for {len(self)} ratings; expected one key per rating")
        rows: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            rows.setdefault(key, []).append(i)
        merged = len(self) - len(rows)
        if merged:
            warnings.warn(
                f"{merged} of {len(self)} rated images are duplicates of another rated image; "
                "each image's ratings were averaged",
                stacklevel=3,
            )
        ratings = self.ratings.double()
        mean = {key: float(ratings[index].mean()) for key, index in rows.items()}
        order = sorted(rows, key=lambda key: (key, mean[key]))
        first = torch.tensor([rows[key][0] for key in order])
        return EncodedRatings(
            self.prefix[first],
            torch.tensor([mean[key] for key in order], dtype=torch.float64),
            order,
            self.duplicates + merged,
        )


@dataclass
class PersonalizationReport:
    """What a fit did: the coefficients, the cross-validation table, the chosen candidate, timings.

    Attributes:
        coefficients: the fitted coefficients (task granularity unless a finer learned candidate won).
        initial_coefficients: the softmax(SROCC) init on all the ratings (task granularity), a reference point.
        zero_shot_srocc: each task model's SROCC on the rated images.
        chosen: the winning candidate (see `CANDIDATES`).
        chosen_step: optimisation steps of the refit (0 for a candidate that learns nothing).
        cross_validation: one row per candidate: its cross-validated SROCC, standard error, criterion, steps.
        cv_srocc, cv_srocc_se: the winner's cross-validated SROCC on the rated images and its standard error.
        folds: K (0 when there were too few ratings to cross-validate).
        num_ratings: distinct rated images; duplicates: rows averaged into another.
    """

    coefficients: Coefficients
    initial_coefficients: Coefficients
    zero_shot_srocc: dict[str, float]
    loss_history: list[float]
    chosen: str
    chosen_step: int
    num_ratings: int
    wall_time: float
    gradient: str
    cross_validation: list[dict[str, Any]] = field(default_factory=list)
    cv_srocc: float | None = None
    cv_srocc_se: float | None = None
    folds: int = 0
    criterion: str = "rank_loss"
    duplicates: int = 0
    calibration: dict[str, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def estimate(self) -> str:
        """One line for the user, e.g. "expected SROCC on your photos: 0.61 ± 0.07, 5-fold CV on 30 ratings"."""
        if self.cv_srocc is None and self.config.get("selection") == "last":
            return "no estimate of SROCC: selection='last' keeps the last step without cross-validating"
        if self.cv_srocc is None:
            return f"no estimate of SROCC: {self.num_ratings} ratings are too few to cross-validate"
        return (
            f"expected SROCC on your photos: {self.cv_srocc:.2f} ± {self.cv_srocc_se:.2f}, "
            f"{self.folds}-fold CV on {self.num_ratings} ratings ({CANDIDATES[self.chosen]})"
        )

    def summary(self) -> dict[str, Any]:
        """JSON-compatible facts stored with a personalized model (`personalization.json`, the model card)."""
        return {
            "num_ratings": self.num_ratings,
            "duplicates": self.duplicates,
            "chosen": self.chosen,
            "chosen_step": self.chosen_step,
            # Every rated image is held out once; the card and the Hub metadata show this as the holdout SROCC.
            "num_holdout": self.num_ratings if self.folds else 0,
            "holdout_srocc": self.cv_srocc,
            "cross_validation": {
                "srocc": self.cv_srocc,
                "srocc_se": self.cv_srocc_se,
                "folds": self.folds,
                "criterion": self.criterion,
                "estimate": self.estimate,
                "candidates": self.cross_validation,
            },
            "zero_shot_srocc": self.zero_shot_srocc,
            "wall_time_s": round(self.wall_time, 3),
            "personalizer": self.config,
            **({"calibration": self.calibration} if self.calibration else {}),
        }


@dataclass
class PersonalizationResult:
    model: AestheticModel
    report: PersonalizationReport

    @property
    def coefficients(self) -> Coefficients:
        return self.report.coefficients


@dataclass
class _Scores:
    """What every candidate shares on one user's canonical ratings: base and task model scores, task SROCCs."""

    base: torch.Tensor  # [N] scores of the base model
    tasks: torch.Tensor  # [T, N] scores of each single task model

    def srocc(self, index: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant task model on few images has SROCC NaN: counted as 0
            values = [srocc(s[index].numpy(), ratings[index].numpy()) for s in self.tasks]
        return torch.tensor([0.0 if math.isnan(v) else float(v) for v in values], dtype=torch.float64)


class Personalizer:
    """Fits coefficients of a bank's task vectors to one user's ratings.

    Args:
        model: the base model the bank was built on (checked by fingerprint).
        bank: the task-vector bank.
        config: a `PersonalizerConfig` (default: our recipe).

    Example:
    ```python
    >>> result = Personalizer(model, bank).fit(ratings)     # a Dataset with `image` and `score`
    >>> print(result.report.estimate)
    expected SROCC on your photos: 0.61 ± 0.07, 5-fold CV on 30 ratings (learned layer-wise coefficients)
    ```
    """

    def __init__(self, model: AestheticModel, bank: TaskVectorBank, config: PersonalizerConfig | None = None) -> None:
        self.config = config or PersonalizerConfig()
        bank.check_base(model)
        if len(bank) == 0:
            raise ValueError("the bank has no tasks")
        self.model = model
        self.bank = bank
        self.device = resolve_device(self.config.device)
        self.dtype = getattr(torch, self.config.dtype)
        self._layouts: dict[str, CoefficientLayout] = {}
        self.layout = self.layout_of(self.config.granularity)
        self.prefix_blocks = model.untouched_prefix_blocks(bank.parameter_names)
        # The network is only ever called with substituted parameters, never changed: the model itself serves unless
        # it must move, change precision or leave training mode (then a copy does).
        weights = torch.float64 if self.dtype == torch.float64 else next(model.parameters()).dtype
        first = next(model.parameters())
        if first.device == self.device and first.dtype == weights and not model.training:
            self._network = model
        else:
            self._network = copy.deepcopy(model).to(self.device, weights).eval()
        self._weights_dtype = weights
        covered = set(bank.parameter_names)
        self._base = {n: p.detach() for n, p in self._network.named_parameters() if n in covered}
        # The bank's one resident copy, in its storage dtype (moved when the network runs elsewhere).
        self._stacked = {n: t.to(self.device) for n, t in bank.stacked().items()}
        own = dict(self._network.named_parameters())
        self._head = (
            {n: own[n].detach() for n in ("head.fc2.weight", "head.fc2.bias")} if self.config.adapt_head else {}
        )
        self._runner = _BackwardInside(self._network)
        self._activation_bytes: int | None = None
        values = len(bank) * sum(t[0].numel() for t in self._stacked.values())
        streamed = self.config.gradient == "streamed" or (
            self.config.gradient == "auto" and values > self.config.streamed_threshold
        )
        self.gradient = "streamed" if streamed else "autograd"

    def _autocast(self) -> Any:
        """Autocast to `config.dtype` when it is a half precision; nothing otherwise."""
        if self.dtype in (torch.bfloat16, torch.float16):
            return torch.autocast(self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def layout_of(self, granularity: str) -> CoefficientLayout:
        """The coefficient layout of this model and bank at a granularity (built once)."""
        if granularity not in self._layouts:
            self._layouts[granularity] = coefficient_layout(
                self.model.parameter_groups(), self.bank.parameter_names, granularity
            )
        return self._layouts[granularity]

    # -- encoding ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Sequence[Any] | torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Output of the frozen prefix for images (PIL, paths or pixel values), computed once and reused.

        When the bank covers the embeddings, nothing is frozen and this is the preprocessed pixel values.
        """
        from .processing import open_image

        chunks = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if isinstance(batch, torch.Tensor):
                pixels = batch
            else:
                opened = [open_image(item, f" in row {start + i}") for i, item in enumerate(batch)]
                pixels = self.model.image_processor(images=opened, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, self._weights_dtype)
            if self.prefix_blocks is not None:
                with self._autocast():
                    pixels = self._network.encode_prefix(pixels, self.prefix_blocks).to(self._weights_dtype)
            chunks.append(pixels)
        return torch.cat(chunks)

    def encode_ratings(self, data: Any) -> EncodedRatings:
        """Validate a user's ratings (Dataset, (image, score) pairs, ratings file), put them in canonical order
        (duplicate images averaged) and encode their images."""
        ratings = canonical(as_ratings(data))
        return EncodedRatings(
            self.encode(ratings.images),
            torch.tensor(ratings.scores, dtype=torch.float64),
            [image_key(image) for image in ratings.images],
            ratings.duplicates,
        )

    # -- prediction ----------------------------------------------------------------------------------------------
    def _layout_for(self, values: torch.Tensor) -> CoefficientLayout:
        """The layout of `[G, T]` values: task granularity for one row, else the configured one."""
        if values.shape[0] == 1:
            return self.layout_of("task")
        for layout in (self.layout, *self._layouts.values()):
            if layout.num_groups == values.shape[0]:
                return layout
        raise ValueError(
            f"coefficients have {values.shape[0]} groups; this model and bank have 1 (task) or "
            f"{self.layout.num_groups} ({self.layout.granularity})"
        )

    def merged(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """Merged parameters theta_0 + sum_t c[g, t] tau_t for `[G, T]` coefficients."""
        layout = self._layout_for(coefficients)
        return merge_parameters(self._base, self._stacked, coefficients.to(self.device, self._weights_dtype), layout)

    def _params(self, values: torch.Tensor, head: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Merged parameters plus the learned change of the head's last layer (when adapted)."""
        params = self.merged(values)
        for name, delta in head.items():
            params[name] = params.get(name, self._head[name]) + delta
        return params

    def predict(
        self,
        coefficients: Coefficients | torch.Tensor,
        prefix: torch.Tensor,
        batch_size: int | None = None,
        head: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Scores of encoded images under ``coefficients`` (no model is materialised), ``batch_size`` images at a
        time (default: `config.batch_size`)."""
        if isinstance(coefficients, Coefficients):
            self.layout_of(coefficients.granularity).check(coefficients, self.bank.task_names)
        values = coefficients.values if isinstance(coefficients, Coefficients) else coefficients
        batch_size = batch_size or self.config.batch_size
        with torch.no_grad():
            params = self._params(values, head or {})
            if isinstance(coefficients, Coefficients):
                params.update({n: t.to(self.device, self._weights_dtype) for n, t in coefficients.extra.items()})
            return torch.cat(
                [
                    self.forward(params, prefix[i : i + batch_size]).scores.float().cpu()
                    for i in range(0, prefix.shape[0], batch_size)
                ]
            )

    def forward(self, params: Mapping[str, torch.Tensor], encoded: torch.Tensor):
        """The network with ``params`` on encoded images (see `encode`): the model's output."""
        with self._autocast():
            return functional_forward(self._network, params, **self._inputs(encoded))

    def _inputs(self, encoded: torch.Tensor) -> dict[str, Any]:
        if self.prefix_blocks is None:
            return {"pixel_values": encoded}
        return {"prefix_hidden": encoded, "prefix_blocks": self.prefix_blocks}

    def task_scores(self, prefix: torch.Tensor) -> torch.Tensor:
        """`[T, N]` scores of each single task model (theta_0 + tau_t) on encoded images."""
        return torch.stack([self.predict(row[None], prefix) for row in torch.eye(len(self.bank))])

    def _scores(self, prefix: torch.Tensor) -> _Scores:
        return _Scores(
            self.predict(torch.zeros(1, len(self.bank)), prefix).double(), self.task_scores(prefix).double()
        )

    def coefficients_from(self, values: torch.Tensor, head: Mapping[str, torch.Tensor] | None = None) -> Coefficients:
        """`Coefficients` of `[G, T]` ``values``; an adapted head layer is stored as its final values (`extra`)."""
        extra = {}
        if head:
            with torch.no_grad():
                params = self._params(values.detach(), head)
            extra = {n: params[n].float().cpu() for n in head}
        layout = self._layout_for(values)
        return Coefficients(
            values.detach().float().cpu(), list(layout.group_names), self.bank.task_names, layout.granularity, extra
        )

    def initial_coefficients(self, encoded: EncodedRatings) -> tuple[Coefficients, dict[str, float]]:
        """The softmax(temperature x zero-shot SROCC) init (or the configured one) and each task model's SROCC."""
        scores = self._scores(encoded.prefix)
        everything = torch.arange(len(encoded))
        values = self._simple("init", scores, everything, encoded.ratings)
        zero_shot = dict(zip(self.bank.task_names, scores.srocc(everything, encoded.ratings).tolist()))
        return self.coefficients_from(values), zero_shot

    # -- the simple candidates: task weights from [T, N] numbers -------------------------------------------------
    def _simple(self, name: str, scores: _Scores, index: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """`[G, T]` coefficients of a candidate that learns nothing in the network, fitted on rows ``index``."""
        cfg, names = self.config, self.bank.task_names
        if name == "init" and isinstance(cfg.init, Coefficients):
            self.layout_of(cfg.init.granularity).check(cfg.init, names)
            return cfg.init.values.clone()
        if name == "init" and isinstance(cfg.init, Mapping):
            return Coefficients.from_task_weights(cfg.init, names).values
        if name == "uniform" or (name == "init" and cfg.init == "uniform"):
            return torch.full((1, len(names)), 1.0 / len(names))
        correlation = scores.srocc(index, ratings)
        if name == "single":
            return torch.nn.functional.one_hot(correlation.argmax(), len(names)).float()[None]
        init = torch.softmax(cfg.temperature * correlation, dim=0)
        if name == "init":
            return init.float()[None]
        if name == "ensemble":
            return self._ensemble_weights(scores, index, ratings, init).float()[None]
        raise ValueError(f"{name!r} is not a simple candidate")

    @staticmethod
    def _ensemble_weights(
        scores: _Scores, index: torch.Tensor, ratings: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        """Weights w of the output ensemble base + sum_t w_t (task_t - base), fitted with the rank loss.

        To first order in small task vectors, the merged model with task-wise coefficients w scores like this
        ensemble, so w is a good start for coefficients, and it costs T x N numbers instead of T forward passes.
        """
        base, deltas = scores.base[index], scores.tasks[:, index] - scores.base[index]
        target = ratings[index]
        weights = start.double().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([weights], lr=ENSEMBLE_LEARNING_RATE)
        for _ in range(ENSEMBLE_STEPS):
            optimizer.zero_grad(set_to_none=True)
            loss = (
                pairwise_rank_loss(base + weights @ deltas, target) + ENSEMBLE_RIDGE * (weights - start).pow(2).sum()
            )
            loss.backward()
            optimizer.step()
        return weights.detach()

    def _start(
        self, granularity: str, scores: _Scores, index: torch.Tensor, ratings: torch.Tensor, start: str | None = None
    ) -> torch.Tensor:
        """Where learned coefficients of ``granularity`` start (`start`, by default the configured one), `[G, T]`."""
        given = isinstance(self.config.init, (Coefficients, Mapping))
        values = self._simple("init" if given else start or self.config.start, scores, index, ratings)
        groups = self.layout_of(granularity).num_groups
        if values.shape[0] != groups:
            values = values.mean(dim=0, keepdim=True)
        return values.expand(groups, -1).clone()

    # -- optimisation ------------------------------------------------------------------------------------------
    def _loss(self, scores: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        loss = scores.sum() * 0.0
        if "pairwise" in self.config.loss:
            loss = loss + pairwise_rank_loss(scores, ratings.to(scores.dtype), self.config.pairing)
        if "mse" in self.config.loss:
            low, high = self.model.config.score_range
            predicted = (scores - low) / (high - low)
            span = (ratings.max() - ratings.min()).clamp_min(1e-12)
            loss = loss + torch.mean((predicted - ((ratings - ratings.min()) / span).to(scores.dtype)) ** 2)
        return loss

    def micro_batch_size(self, batch_size: int) -> int:
        """Images per micro-batch for a step on ``batch_size`` images: `config.micro_batch_size`, else the most whose
        estimated activations fit `config.activation_budget_mb` (the whole batch when it fits)."""
        cfg = self.config
        if cfg.micro_batch_size is not None:
            return min(cfg.micro_batch_size, batch_size)
        if self._activation_bytes is None:
            return batch_size
        fits = int(cfg.activation_budget_mb * 2**20 // self._activation_bytes)
        return max(1, min(batch_size, fits))

    def _estimate_activations(self, encoded: torch.Tensor) -> None:
        """Activation bytes per image of a step (see `ACTIVATIONS_PER_BLOCK`), from one image's hidden state."""
        if self._activation_bytes is not None or not len(encoded):
            return
        if self.prefix_blocks is None:
            with torch.no_grad(), self._autocast():
                hidden = self._network.adapter.embed(encoded[:1])
        else:
            hidden = encoded[:1]
        blocks = self._network.adapter.num_blocks - (self.prefix_blocks or 0) + 1
        per_block = hidden.numel() * 4
        kept = blocks + ACTIVATIONS_PER_BLOCK if self.config.gradient_checkpointing else blocks * ACTIVATIONS_PER_BLOCK
        self._activation_bytes = max(1, per_block * kept)

    def _weight_gradient(self, leaves: Mapping[str, torch.Tensor], batch: EncodedRatings) -> torch.Tensor:
        """Accumulate dL/dW of the batch's loss into ``leaves`` (the network's substituted parameters); the loss.

        The pairwise loss needs every score of the batch, but not every activation at once: the scores are computed
        without a graph, d loss / d scores is taken, and then each micro-batch's scores are backpropagated with their
        slice of it. By the chain rule this is exactly the full batch's gradient.
        """
        self._estimate_activations(batch.prefix)
        size, micro = len(batch), self.micro_batch_size(len(batch))
        ratings = batch.ratings.to(self.device)
        params = {f"network.{name}": tensor for name, tensor in leaves.items()}

        def backward(encoded: torch.Tensor, objective: Any) -> torch.Tensor:
            return torch.func.functional_call(
                self._runner, params, (objective, self._inputs(encoded), self._autocast()), strict=False
            )

        with self._checkpointing():
            if micro >= size:  # one pass: forward with a graph, loss, backward
                return backward(batch.prefix, lambda scores: self._loss(scores, ratings.to(scores.dtype)))
            with torch.no_grad():
                scores = torch.cat(
                    [self.forward(leaves, batch.prefix[i : i + micro]).scores.float() for i in range(0, size, micro)]
                )
            scores.requires_grad_(True)
            loss = self._loss(scores, ratings.to(scores.dtype))
            (slope,) = torch.autograd.grad(loss, scores)
            for i in range(0, size, micro):
                part = slope[i : i + micro]
                backward(batch.prefix[i : i + micro], lambda scores, part=part: torch.sum(scores * part))
            return loss.detach()

    @contextlib.contextmanager
    def _checkpointing(self) -> Any:
        """Gradient checkpointing of the network's blocks while a step runs, when configured."""
        network, enable = self._network, self.config.gradient_checkpointing
        before = getattr(network, "gradient_checkpointing", False)
        network.gradient_checkpointing = enable or before
        try:
            yield
        finally:
            network.gradient_checkpointing = before

    def _step_gradient(
        self, values: torch.Tensor, head: dict[str, torch.Tensor], batch: EncodedRatings, init: torch.Tensor
    ) -> float:
        """Set the gradients of ``values`` (and of the head change) for one batch; return the loss.

        The gradient with respect to the merged weights, dL/dW, is computed micro-batch by micro-batch (see
        `_weight_gradient`); then `"autograd"` backpropagates it through the merge, and `"streamed"` takes its inner
        products with the task vectors one task at a time.
        """
        autograd = self.gradient == "autograd"
        if autograd:
            merged = self._params(values, head)
        else:
            merged = self._params(values.detach(), {n: d.detach() for n, d in head.items()})
        leaves = {n: t.detach().requires_grad_(True) for n, t in merged.items()}
        loss = self._weight_gradient(leaves, batch)
        grads = {n: t.grad for n, t in leaves.items() if t.grad is not None}
        del leaves
        if autograd:
            torch.autograd.backward([merged[n] for n in grads], [grads[n] for n in grads])
        else:
            grad = streamed_coefficient_grad(
                grads,
                lambda t: {n: s[t] for n, s in self._stacked.items()},
                len(self.bank),
                self._layout_for(values),
            )
            values.grad = grad.to(values.dtype) if values.grad is None else values.grad + grad.to(values.dtype)
            for name, delta in head.items():  # d(theta + delta)/d(delta) is the identity
                delta.grad = grads[name].clone()
        del merged, grads
        loss = loss.to(values.device, values.dtype)
        if self.config.init_pull > 0:
            loss = loss + self.config.init_pull * torch.sum((values - init) ** 2)
        if head:
            loss = loss + self.config.head_l2 * sum(torch.sum(d**2) for d in head.values())
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())

    def _optimise(
        self, start: torch.Tensor, train: EncodedRatings, steps: int, watch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[float], list[torch.Tensor]]:
        """Optimise `[G, T]` coefficients from ``start`` on ``train`` for ``steps`` steps.

        Returns the final coefficients and head change, the loss per step, and, when ``watch`` (encoded images) is
        given, their scores at step 0 and every `eval_every` steps (and the last).
        """
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        values = start.clone().requires_grad_(True)
        head = {n: torch.zeros_like(t, requires_grad=True) for n, t in self._head.items()}
        groups = [{"params": [values]}] + (
            [{"params": list(head.values()), "lr": cfg.head_learning_rate, "weight_decay": 0.0}] if head else []
        )
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        losses: list[float] = []
        watched: list[torch.Tensor] = []

        def look() -> None:
            if watch is not None:
                watched.append(self.predict(values.detach(), watch, head={n: d.detach() for n, d in head.items()}))

        look()
        order, cursor = torch.randperm(len(train), generator=generator), 0
        for step in tqdm(
            range(1, steps + 1), desc="Personalizing", unit="step", disable=not cfg.progress, leave=False
        ):
            if len(train) <= cfg.batch_size:
                index = torch.randperm(len(train), generator=generator)
            else:
                if cursor + cfg.batch_size > len(train):
                    order, cursor = torch.randperm(len(train), generator=generator), 0
                index, cursor = order[cursor : cursor + cfg.batch_size], cursor + cfg.batch_size
            optimizer.zero_grad(set_to_none=True)
            losses.append(self._step_gradient(values, head, train.subset(index), start))
            if not torch.isfinite(values.grad).all():
                raise FloatingPointError(f"non-finite coefficient gradient at step {step}; lower the learning rate")
            optimizer.step()
            if step % cfg.eval_every == 0 or step == steps:
                look()
        return values.detach(), {n: d.detach() for n, d in head.items()}, losses, watched

    def _eval_steps(self) -> list[int]:
        every, steps = self.config.eval_every, self.config.steps
        return [0, *range(every, steps, every), steps]

    # -- selection -----------------------------------------------------------------------------------------------
    def _folds(self, ratings: torch.Tensor) -> list[torch.Tensor]:
        """Deterministic folds of canonical rows, stratified by rating: held-out rows of each fold, or none if the
        ratings are too few (fewer than 2 per fold)."""
        n = len(ratings)
        k = min(self.config.folds, n // 2)
        if k < 2:
            return []
        by_rating = sorted(range(n), key=lambda i: (float(ratings[i]), i))
        generator = torch.Generator().manual_seed(self.config.seed)
        fold = torch.empty(n, dtype=torch.long)
        for start in range(0, n, k):
            block = torch.tensor(by_rating[start : start + k])
            fold[block] = torch.randperm(k, generator=generator)[: len(block)]
        return [torch.nonzero(fold == f).flatten() for f in range(k)]

    def _cross_validate(
        self, encoded: EncodedRatings, scores: _Scores, folds: list[torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """Out-of-fold predictions of every candidate on every rated image, and the step count of learned ones."""
        n, ratings = len(encoded), encoded.ratings
        names = self.config.candidate_names
        learned = [name for name in names if name in GRANULARITIES]
        steps = self._eval_steps()
        simple = {name: torch.zeros(n, dtype=torch.float64) for name in names if name not in learned}
        curves = {name: torch.zeros(len(steps), n, dtype=torch.float64) for name in learned}
        uniform = self.predict(self._simple("uniform", scores, torch.arange(n), ratings), encoded.prefix).double()
        for held in folds:
            train = torch.from_numpy(np.setdiff1d(np.arange(n), held.numpy()))
            for name in simple:
                if name == "uniform":
                    simple[name][held] = uniform[held]
                elif name == "single":
                    simple[name][held] = scores.tasks[int(scores.srocc(train, ratings).argmax()), held]
                else:
                    values = self._simple(name, scores, train, ratings)
                    simple[name][held] = self.predict(values, encoded.prefix[held]).double()
            for name in learned:
                start = self._start(name, scores, train, ratings)
                watched = self._optimise(start, encoded.subset(train), self.config.steps, encoded.prefix[held])[3]
                curves[name][:, held] = torch.stack(watched).double()
        out = {name: (prediction, 0) for name, prediction in simple.items()}
        for name, curve in curves.items():
            values = _criterion(curve.numpy(), ratings.numpy(), self.config.criterion)
            best = int(np.argmax(values))  # the fewest steps among equals
            out[name] = (curve[best], steps[best])
        return {name: out[name] for name in names}

    def _choose(
        self, predictions: dict[str, tuple[torch.Tensor, int]], ratings: torch.Tensor
    ) -> tuple[str, list[dict[str, Any]], float, float]:
        """The simplest candidate within `tolerance` standard errors of the best; the table; the winner's SROCC
        and its standard error (paired bootstrap over the rated images)."""
        names = list(predictions)
        oof = np.stack([predictions[name][0].numpy() for name in names])
        target = ratings.numpy()
        rng = np.random.default_rng(self.config.seed)
        samples = rng.integers(0, len(target), size=(BOOTSTRAP_SAMPLES, len(target)))
        value = _criterion(oof, target, self.config.criterion)
        boot = np.stack([_criterion(oof[:, s], target[s], self.config.criterion) for s in samples], axis=1)
        correlation = _criterion(oof, target, "srocc")
        boot_srocc = np.stack([_criterion(oof[:, s], target[s], "srocc") for s in samples], axis=1)
        best = int(np.argmax(value))
        gap_se = np.nanstd(boot[best] - boot, axis=1)
        within = value[best] - value <= self.config.tolerance * gap_se + 1e-12
        chosen = int(np.flatnonzero(within)[0])
        table = [
            {
                "candidate": name,
                "srocc": round(float(correlation[i]), 4),
                "srocc_se": round(float(np.nanstd(boot_srocc[i])), 4),
                self.config.criterion: round(float(value[i]), 4),
                "gap_to_best_se": round(float(gap_se[i]), 4),
                "steps": predictions[name][1],
                "chosen": i == chosen,
            }
            for i, name in enumerate(names)
        ]
        return names[chosen], table, table[chosen]["srocc"], table[chosen]["srocc_se"]

    # -- fitting -------------------------------------------------------------------------------------------------
    def fit_encoded(self, encoded: EncodedRatings) -> tuple[Coefficients, PersonalizationReport]:
        """Fit coefficients to encoded ratings (see `encode_ratings`); returns them and a report.

        Rows are put in canonical order first (by ``encoded.keys``, else by a hash of each prefix row), so the result
        does not depend on their order.
        """
        began = time.perf_counter()
        _check_ratings(encoded.ratings)
        encoded = encoded.canonical()
        _check_ratings(encoded.ratings)
        scores = self._scores(encoded.prefix)
        everything, ratings = torch.arange(len(encoded)), encoded.ratings
        cfg = self.config
        folds = self._folds(ratings) if cfg.selection == "cv" else []
        table: list[dict[str, Any]] = []
        estimate: tuple[float | None, float | None] = (None, None)
        if cfg.selection == "last":
            chosen, steps = cfg.granularity, cfg.steps
        elif not folds:
            logger.info("Too few ratings (%d) to cross-validate; keeping the softmax(SROCC) mix", len(encoded))
            chosen, steps = "init", 0
        else:
            predictions = self._cross_validate(encoded, scores, folds)
            chosen, table, *estimate = self._choose(predictions, ratings)
            steps = predictions[chosen][1]
        coefficients, losses = self._fit_candidate(chosen, steps, encoded, scores)
        calibration = self._calibration(coefficients, encoded) if cfg.calibrate else None
        initial = self.coefficients_from(self._simple("init", scores, everything, ratings))
        report = PersonalizationReport(
            coefficients=coefficients,
            initial_coefficients=initial,
            zero_shot_srocc=dict(zip(self.bank.task_names, scores.srocc(everything, ratings).tolist())),
            loss_history=losses,
            chosen=chosen,
            chosen_step=steps if chosen in GRANULARITIES else 0,
            num_ratings=len(encoded),
            wall_time=time.perf_counter() - began,
            gradient=self.gradient,
            cross_validation=table,
            cv_srocc=estimate[0],
            cv_srocc_se=estimate[1],
            folds=len(folds),
            criterion=cfg.criterion,
            duplicates=encoded.duplicates,
            calibration=calibration,
            config=cfg.to_dict(),
        )
        return coefficients, report

    def _fit_candidate(
        self, name: str, steps: int, encoded: EncodedRatings, scores: _Scores | None = None
    ) -> tuple[Coefficients, list[float]]:
        """Fit candidate ``name`` on all of (canonical) ``encoded``; learned ones for ``steps`` steps."""
        scores = scores or self._scores(encoded.prefix)
        everything, ratings = torch.arange(len(encoded)), encoded.ratings
        if name not in GRANULARITIES:
            return self.coefficients_from(self._simple(name, scores, everything, ratings)), []
        start = self._start(name, scores, everything, ratings, "init" if self.config.selection == "last" else None)
        if not steps:
            return self.coefficients_from(start), []
        values, head, losses, _ = self._optimise(start, encoded, steps)
        return self.coefficients_from(values, head), losses

    def candidate_coefficients(
        self, encoded: EncodedRatings, report: PersonalizationReport
    ) -> dict[str, Coefficients]:
        """Every cross-validated candidate of ``report`` refitted on all the ratings (the winner's is the fit's):
        for studying selection rules on test images."""
        encoded = encoded.canonical()
        scores = self._scores(encoded.prefix)
        return {
            row["candidate"]: self._fit_candidate(row["candidate"], row["steps"], encoded, scores)[0]
            for row in report.cross_validation
        }

    def _calibration(self, coefficients: Coefficients, encoded: EncodedRatings) -> dict[str, float]:
        """Least-squares ratings ~ slope * prediction + intercept, with slope kept positive (monotone)."""
        predicted = self.predict(coefficients, encoded.prefix).double()
        ratings = encoded.ratings.double()
        centred = predicted - predicted.mean()
        slope = float((centred * (ratings - ratings.mean())).sum() / centred.pow(2).sum().clamp_min(1e-12))
        if slope <= 0:
            slope = float(ratings.std() / predicted.std().clamp_min(1e-12))
        return {"slope": slope, "intercept": float(ratings.mean() - slope * predicted.mean())}

    def fit(self, data: Any) -> PersonalizationResult:
        """Fit to a user's ratings and return the personalized model with its report.

        Args:
            data: a `datasets.Dataset` with `image` and `score` columns, a list of (image, score) pairs, a pair
                `(images, scores)`, or the path of a ratings CSV / image folder (see `load_ratings`).
        """
        coefficients, report = self.fit_encoded(self.encode_ratings(data))
        model = self.model.with_coefficients(self.bank, coefficients, info=report.summary())
        return PersonalizationResult(model, report)


def _criterion(predictions: np.ndarray, target: np.ndarray, criterion: str) -> np.ndarray:
    """Higher is better, per row of `[C, N]` predictions: SROCC (NaN, a constant row, counts as 0) or minus the
    Bradley-Terry rank loss over all pairs of differently rated images."""
    predictions = np.atleast_2d(predictions)
    if criterion == "srocc":
        x = rankdata(predictions, axis=1)
        y = rankdata(target)
        x, y = x - x.mean(axis=1, keepdims=True), y - y.mean()
        denominator = np.sqrt((x**2).sum(axis=1) * (y**2).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num((x @ y) / denominator, nan=0.0)
    above = target[:, None] > target[None, :]
    if not above.any():
        return np.zeros(len(predictions))
    diff = predictions[:, :, None] - predictions[:, None, :]
    return -np.logaddexp(0.0, -diff[:, above]).mean(axis=1)


def _check_ratings(ratings: torch.Tensor) -> None:
    if not torch.isfinite(ratings).all():
        rows = (~torch.isfinite(ratings)).nonzero().flatten().tolist()[:5]
        raise ValueError(f"ratings must be finite numbers; rows {rows} are NaN or inf")
    if torch.unique(ratings).numel() < 2:
        raise ValueError(
            f"personalization needs at least 2 distinct ratings to learn an order, received {ratings.numel()} ratings "
            f"all equal to {ratings[0].item() if ratings.numel() else 'nothing'}"
        )


def fit_many(
    model: AestheticModel,
    bank: TaskVectorBank,
    dataset: Any,
    config: PersonalizerConfig | None = None,
    user_column: str = "user_id",
) -> dict[str, PersonalizationReport]:
    """Personalize every user of a dataset with a `user_id` column; returns each user's report (with coefficients)."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is None or user_column not in column_names:
        raise ValueError(
            f"fit_many needs a datasets.Dataset with a {user_column!r} column; received columns {column_names}"
        )
    personalizer = Personalizer(model, bank, config)
    reports = {}
    users = rows_by_user(dataset, user_column)
    for user, rows in tqdm(users.items(), desc="Users", unit="user", disable=not personalizer.config.progress):
        _, reports[user] = personalizer.fit_encoded(personalizer.encode_ratings(dataset.select(rows)))
    return reports
