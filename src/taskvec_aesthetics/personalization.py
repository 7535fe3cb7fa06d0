"""Personalization: fit task-vector coefficients c[g, t] to one person's ratings (the paper's method, done right).

The frozen prefix of the encoder (blocks no task vector touches) runs once per image; every optimisation step runs
only the rest of the network with merged parameters theta_0 + sum_t c[g(p), t] * tau_t[p], as a functional call, so
the base model is never modified. Model selection uses the user's rated images only (an internal holdout).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .bank import TaskVectorBank
from .coefficients import GRANULARITIES, Coefficients
from .losses import pairwise_rank_loss
from .merging import coefficient_layout, functional_forward, merge_parameters, streamed_coefficient_grad
from .metrics import srocc
from .ratings_input import Ratings, as_ratings, rows_by_user

if TYPE_CHECKING:
    from .modeling import AestheticModel

__all__ = [
    "PersonalizerConfig",
    "Personalizer",
    "PersonalizationReport",
    "PersonalizationResult",
    "EncodedRatings",
    "pairwise_rank_loss",
    "fit_many",
]

logger = logging.getLogger(__name__)

INITS = ("zero_shot_srocc", "uniform")
LOSSES = ("pairwise", "mse", "pairwise+mse")
PAIRINGS = ("all", "half")
GRADIENTS = ("auto", "autograd", "streamed")


@dataclass
class PersonalizerConfig:
    """How coefficients are fitted. The defaults are our recipe; `from_preset("paper")` is the authors'.

    Args:
        granularity: `"task"` (T coefficients), `"layer"` (one per layer group and task) or `"tensor"`
            (one per parameter tensor and task, the paper's).
        init: `"zero_shot_srocc"` (softmax of temperature x each task model's SROCC on the rated images),
            `"uniform"` (1 / T), or given coefficients (`Coefficients` or `{task: weight}`).
        temperature: softmax temperature of the zero-shot init (paper: 10).
        loss: `"pairwise"` (Bradley-Terry on expected scores), `"mse"` (on range-normalised scores) or both.
        pairing: `"all"`: every pair in the batch with different ratings, ties masked out; `"half"`: the official
            code's pairing of the batch's first half with its second half, ties counted with target 0.5.
        steps: optimisation steps.
        learning_rate: AdamW learning rate of the coefficients.
        weight_decay: AdamW weight decay (pulls coefficients toward 0, i.e. toward the base model).
        init_pull: weight of an L2 penalty pulling the coefficients toward their initial values.
        batch_size: images per step (all rated images when there are fewer).
        holdout_fraction: share of the rated images held out to pick the step (0 disables selection: last step).
        eval_every: steps between holdout evaluations.
        refit: after picking the step count on the holdout, refit on all rated images for that many steps.
        calibrate: fit a monotone linear map from predictions onto the user's rating scale.
        adapt_head: also learn an additive change of the head's last layer (5,130 values for 10 bins), stored with
            the coefficients; `head_learning_rate` is its Adam learning rate and `head_l2` an L2 pull toward 0.
        gradient: `"autograd"`, `"streamed"` (exact, memory-lean; see `merging.streamed_coefficient_grad`) or
            `"auto"` (streamed when T x covered values exceeds `streamed_threshold`).
        seed: seed of the holdout split and minibatch order.
        device, dtype: where and in which precision the network runs.
        progress: show a progress bar over steps.
    """

    granularity: str = "layer"
    init: str | Coefficients | Mapping[str, float] = "zero_shot_srocc"
    temperature: float = 10.0
    loss: str = "pairwise"
    pairing: str = "all"
    steps: int = 100
    learning_rate: float = 1e-2
    weight_decay: float = 0.0
    init_pull: float = 0.0
    batch_size: int = 32
    holdout_fraction: float = 0.25
    eval_every: int = 5
    refit: bool = True
    calibrate: bool = False
    adapt_head: bool = False
    head_learning_rate: float = 1e-3
    head_l2: float = 1e-2
    gradient: str = "auto"
    streamed_threshold: int = 200_000_000
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    progress: bool = False

    def __post_init__(self) -> None:
        _one_of("granularity", self.granularity, GRANULARITIES)
        _one_of("loss", self.loss, LOSSES)
        _one_of("pairing", self.pairing, PAIRINGS)
        _one_of("gradient", self.gradient, GRADIENTS)
        if isinstance(self.init, str):
            _one_of("init", self.init, INITS)
        elif not isinstance(self.init, (Coefficients, Mapping)):
            raise TypeError(
                f"init must be one of {INITS}, Coefficients or a dict, received {type(self.init).__name__}"
            )
        for name in ("steps", "batch_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, received {getattr(self, name)}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), received {self.holdout_fraction}")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, received {getattr(self, name)}")
        if min(self.weight_decay, self.init_pull, self.head_l2) < 0 or self.head_learning_rate <= 0:
            raise ValueError(
                "weight_decay, init_pull and head_l2 must be >= 0 and head_learning_rate > 0; received "
                f"{self.weight_decay}, {self.init_pull}, {self.head_l2}, {self.head_learning_rate}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or float64, received {self.dtype!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PersonalizerConfig:
        """`"default"`: our recipe; `"paper"`: the authors' (tensor granularity, softmax(10 x SROCC) init, half-batch
        pairing, AdamW lr 1e-2 with PyTorch's default weight decay, 500 steps, batch 32, last step kept)."""
        presets = {
            "default": {},
            "paper": dict(
                granularity="tensor",
                init="zero_shot_srocc",
                temperature=10.0,
                loss="pairwise",
                pairing="half",
                learning_rate=1e-2,
                weight_decay=1e-2,
                steps=500,
                batch_size=32,
                holdout_fraction=0.0,
                refit=False,
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        data = (
            dataclasses.asdict(self)
            if not isinstance(self.init, Coefficients)
            else {
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "init"},
                "init": "given",
            }
        )
        if isinstance(self.init, Mapping):
            data["init"] = dict(self.init)
        return data


def _one_of(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, received {value!r}")


@dataclass
class EncodedRatings:
    """Rated images after the frozen prefix, with their ratings: the only input the optimisation needs."""

    prefix: torch.Tensor
    ratings: torch.Tensor

    def __len__(self) -> int:
        return int(self.ratings.shape[0])

    def subset(self, index: torch.Tensor) -> EncodedRatings:
        return EncodedRatings(self.prefix[index], self.ratings[index])


@dataclass
class PersonalizationReport:
    """What a fit did: coefficients, trajectories, the chosen step, timings."""

    coefficients: Coefficients
    initial_coefficients: Coefficients
    zero_shot_srocc: dict[str, float]
    loss_history: list[float]
    holdout_history: list[dict[str, float]]
    chosen_step: int
    num_ratings: int
    num_holdout: int
    wall_time: float
    gradient: str
    calibration: dict[str, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-compatible facts stored with a personalized model."""
        chosen = [h for h in self.holdout_history if h["step"] == self.chosen_step]
        return {
            "num_ratings": self.num_ratings,
            "num_holdout": self.num_holdout,
            "chosen_step": self.chosen_step,
            "holdout_srocc": chosen[0]["srocc"] if chosen else None,
            "holdout_loss": chosen[0]["loss"] if chosen else None,
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


class Personalizer:
    """Fits coefficients of a bank's task vectors to one user's ratings.

    Args:
        model: the base model the bank was built on (checked by fingerprint).
        bank: the task-vector bank.
        config: a `PersonalizerConfig` (default: our recipe).

    Example:
    ```python
    >>> result = Personalizer(model, bank).fit(ratings)     # a Dataset with `image` and `score`
    >>> result.model.score(["photo.jpg"]), result.report.chosen_step
    ```
    """

    def __init__(self, model: AestheticModel, bank: TaskVectorBank, config: PersonalizerConfig | None = None) -> None:
        self.config = config or PersonalizerConfig()
        bank.check_base(model)
        if len(bank) == 0:
            raise ValueError("the bank has no tasks")
        self.model = model
        self.bank = bank
        self.device = torch.device(self.config.device)
        self.dtype = getattr(torch, self.config.dtype)
        self.layout = coefficient_layout(model.parameter_groups(), bank.parameter_names, self.config.granularity)
        self.prefix_blocks = model.untouched_prefix_blocks(bank.parameter_names)
        self._network = copy.deepcopy(model).to(self.device, self.dtype).eval()
        covered = set(bank.parameter_names)
        self._base = {n: p.detach() for n, p in self._network.named_parameters() if n in covered}
        self._stacked = {n: t.to(self.device, self.dtype) for n, t in bank.stacked().items()}
        own = dict(self._network.named_parameters())
        self._head = (
            {n: own[n].detach() for n in ("head.fc2.weight", "head.fc2.bias")} if self.config.adapt_head else {}
        )
        values = len(bank) * sum(t[0].numel() for t in self._stacked.values())
        streamed = self.config.gradient == "streamed" or (
            self.config.gradient == "auto" and values > self.config.streamed_threshold
        )
        self.gradient = "streamed" if streamed else "autograd"

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
            pixels = pixels.to(self.device, self.dtype)
            chunks.append(
                pixels if self.prefix_blocks is None else self._network.encode_prefix(pixels, self.prefix_blocks)
            )
        return torch.cat(chunks)

    def encode_ratings(self, data: Any) -> EncodedRatings:
        """Validate a user's ratings (Dataset, (image, score) pairs, ratings file) and encode their images."""
        ratings: Ratings = as_ratings(data)
        return EncodedRatings(self.encode(ratings.images), torch.tensor(ratings.scores, dtype=torch.float64))

    # -- prediction ----------------------------------------------------------------------------------------------
    def merged(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        return merge_parameters(self._base, self._stacked, coefficients.to(self.device, self.dtype), self.layout)

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
        batch_size: int = 256,
        head: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Scores of encoded images under ``coefficients`` (no model is materialised)."""
        values = coefficients.values if isinstance(coefficients, Coefficients) else coefficients
        with torch.no_grad():
            params = self._params(values, head or {})
            if isinstance(coefficients, Coefficients):
                params.update({n: t.to(self.device, self.dtype) for n, t in coefficients.extra.items()})
            return torch.cat(
                [
                    self.forward(params, prefix[i : i + batch_size]).scores.float().cpu()
                    for i in range(0, prefix.shape[0], batch_size)
                ]
            )

    def forward(self, params: Mapping[str, torch.Tensor], encoded: torch.Tensor):
        """The network with ``params`` on encoded images (see `encode`): the model's output."""
        if self.prefix_blocks is None:
            return functional_forward(self._network, params, pixel_values=encoded)
        return functional_forward(self._network, params, prefix_hidden=encoded, prefix_blocks=self.prefix_blocks)

    def task_scores(self, prefix: torch.Tensor) -> torch.Tensor:
        """`[T, N]` scores of each single task model (theta_0 + tau_t) on encoded images."""
        rows = []
        for t in range(len(self.bank)):
            one_hot = torch.zeros(self.layout.num_groups, len(self.bank))
            one_hot[:, t] = 1.0
            rows.append(self.predict(one_hot, prefix))
        return torch.stack(rows)

    def coefficients_from(self, values: torch.Tensor, head: Mapping[str, torch.Tensor] | None = None) -> Coefficients:
        """`Coefficients` of ``values``; an adapted head layer is stored as its final values (`extra`)."""
        extra = {}
        if head:
            with torch.no_grad():
                params = self._params(values.detach(), head)
            extra = {n: params[n].float().cpu() for n in head}
        return Coefficients(
            values.detach().float().cpu(),
            list(self.layout.group_names),
            self.bank.task_names,
            self.config.granularity,
            extra,
        )

    def initial_coefficients(self, encoded: EncodedRatings) -> tuple[Coefficients, dict[str, float]]:
        """The starting point: softmax(temperature x zero-shot SROCC), uniform, or given; and the SROCCs."""
        names = self.bank.task_names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant task model on few images has SROCC NaN: counted as 0
            zero_shot = {
                n: srocc(s.numpy(), encoded.ratings.numpy()) for n, s in zip(names, self.task_scores(encoded.prefix))
            }
        zero_shot = {n: (0.0 if math.isnan(v) else float(v)) for n, v in zero_shot.items()}
        init = self.config.init
        if isinstance(init, Coefficients):
            coefficients = init
        elif isinstance(init, Mapping):
            row = Coefficients.from_task_weights(init, names).values
            coefficients = self.coefficients_from(row.expand(self.layout.num_groups, -1))
        elif init == "uniform":
            coefficients = self.coefficients_from(torch.full((self.layout.num_groups, len(names)), 1.0 / len(names)))
        else:
            weights = torch.softmax(self.config.temperature * torch.tensor([zero_shot[n] for n in names]), dim=0)
            coefficients = self.coefficients_from(weights.expand(self.layout.num_groups, -1))
        self.layout.check(coefficients, names)
        return coefficients, zero_shot

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

    def _step_gradient(
        self, values: torch.Tensor, head: dict[str, torch.Tensor], batch: EncodedRatings, init: torch.Tensor
    ) -> float:
        """Set the gradients of ``values`` (and of the head change) for one batch; return the loss."""
        if self.gradient == "autograd":
            loss = self._loss(self.forward(self._params(values, head), batch.prefix).scores, batch.ratings)
        else:
            detached = {n: d.detach() for n, d in head.items()}
            leaves = {n: t.detach().requires_grad_(True) for n, t in self._params(values.detach(), detached).items()}
            loss = self._loss(self.forward(leaves, batch.prefix).scores, batch.ratings)
            loss.backward()
            names = self.bank.task_names
            grad = streamed_coefficient_grad(
                {n: t.grad for n, t in leaves.items()},
                lambda t: {n: s[t] for n, s in self._stacked.items()},
                len(names),
                self.layout,
            )
            values.grad = grad.to(values.dtype) if values.grad is None else values.grad + grad.to(values.dtype)
            for name, delta in head.items():  # d(theta + delta)/d(delta) is the identity
                delta.grad = leaves[name].grad.clone()
            loss = loss.detach()
        if self.config.init_pull > 0:
            loss = loss + self.config.init_pull * torch.sum((values - init) ** 2)
        if head:
            loss = loss + self.config.head_l2 * sum(torch.sum(d**2) for d in head.values())
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())

    def _optimise(
        self, init: Coefficients, train: EncodedRatings, holdout: EncodedRatings | None, steps: int, desc: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[float], list[dict[str, float]], int]:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        start = init.values.clone()
        values = start.clone().requires_grad_(True)
        head = {n: torch.zeros_like(t, requires_grad=True) for n, t in self._head.items()}
        groups = [{"params": [values]}] + (
            [{"params": list(head.values()), "lr": cfg.head_learning_rate, "weight_decay": 0.0}] if head else []
        )
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        losses: list[float] = []
        holdout_history: list[dict[str, float]] = []

        def snapshot() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return values.detach().clone(), {n: d.detach().clone() for n, d in head.items()}

        best = (math.inf, 0, snapshot())
        if holdout is not None:
            holdout_history.append(self._evaluate_holdout(0, values, head, holdout))
            best = (holdout_history[-1]["loss"], 0, snapshot())
        order = torch.randperm(len(train), generator=generator)
        cursor = 0
        for step in tqdm(range(1, steps + 1), desc=desc, unit="step", disable=not cfg.progress, leave=False):
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
            if holdout is not None and (step % cfg.eval_every == 0 or step == steps):
                holdout_history.append(self._evaluate_holdout(step, values, head, holdout))
                if holdout_history[-1]["loss"] < best[0] - 1e-9:
                    best = (holdout_history[-1]["loss"], step, snapshot())
        if holdout is None:
            return *snapshot(), losses, holdout_history, steps
        return *best[2], losses, holdout_history, best[1]

    def _evaluate_holdout(
        self, step: int, values: torch.Tensor, head: Mapping[str, torch.Tensor], holdout: EncodedRatings
    ) -> dict[str, float]:
        """Holdout rank loss (the selection criterion: continuous, so it separates steps on few images) and SROCC."""
        scores = self.predict(values.detach(), holdout.prefix, head={n: d.detach() for n, d in head.items()})
        loss = float(pairwise_rank_loss(scores.double(), holdout.ratings, "all"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = srocc(scores.numpy(), holdout.ratings.numpy())
        return {"step": step, "loss": loss, "srocc": float("nan") if math.isnan(value) else float(value)}

    def _split(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = int(round(self.config.holdout_fraction * n))
        if size < 3 or n - size < 2:
            if self.config.holdout_fraction > 0:
                logger.info("Too few ratings (%d) for a holdout; keeping the last step", n)
            return torch.arange(n), None
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed + 1))
        return perm[size:].sort().values, perm[:size].sort().values

    def fit_encoded(self, encoded: EncodedRatings) -> tuple[Coefficients, PersonalizationReport]:
        """Fit coefficients to already encoded ratings (see `encode_ratings`); returns them and a report."""
        began = time.perf_counter()
        _check_ratings(encoded.ratings)
        init, zero_shot = self.initial_coefficients(encoded)
        train_index, holdout_index = self._split(len(encoded))
        train = encoded.subset(train_index)
        holdout = None if holdout_index is None else encoded.subset(holdout_index)
        values, head, losses, history, chosen = self._optimise(
            init, train, holdout, self.config.steps, "Personalizing"
        )
        if holdout is not None and self.config.refit and chosen > 0:
            # The holdout chose how many steps help; spend them on all the rated images.
            values, head = self._optimise(init, encoded, None, chosen, "Refitting")[:2]
        coefficients = self.coefficients_from(values, head)
        calibration = self._calibration(coefficients, encoded) if self.config.calibrate else None
        report = PersonalizationReport(
            coefficients=coefficients,
            initial_coefficients=init,
            zero_shot_srocc=zero_shot,
            loss_history=losses,
            holdout_history=history,
            chosen_step=chosen,
            num_ratings=len(encoded),
            num_holdout=0 if holdout is None else len(holdout),
            wall_time=time.perf_counter() - began,
            gradient=self.gradient,
            calibration=calibration,
            config=self.config.to_dict(),
        )
        return coefficients, report

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
