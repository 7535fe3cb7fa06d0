"""The settings of personalization ([`PersonalizerConfig`]) and the candidates it chooses from.

Written in the library's one config style (`utils.fields.option`). This module is torch-free: `personalize --help`
does not import torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..constants import GRANULARITIES
from ..errors import InputError, InputTypeError
from ..utils.fields import check_fields, option

if TYPE_CHECKING:
    from ..task_vectors.coefficients import Coefficients

__all__ = ["CANDIDATES", "OUTPUTS", "PersonalizerConfig"]

# -- personalization -----------------------------------------------------------------------------------------------
#: Candidates of the cross-validated selection, in the order in which ties within a standard error are broken. The
#: output ensemble itself comes first where it competes (by default only where scoring with it costs at most
#: `max_scoring_cost` times one model; whoever accepts that cost wants its accuracy, so a one-pass candidate must beat
#: it by more than a standard error). Then
#: the softmax(SROCC) mix (the paper's start; it weighs the same T agreements as the best single model, but averages
#: where the argmax of T noisy values jumps, so it varies least between draws of the ratings), the best single
#: database model, the other mixes, and learned coefficients. `task`, `layer` and `tensor` are coefficients learned at
#: that granularity.
CANDIDATES: dict[str, str] = {
    "outputs": "the output ensemble itself: each task model's standardized score, weighed; scoring runs the covered "
    "blocks T times",
    "init": "softmax(temperature x SROCC) mix",
    "single": "best single task model",
    "ensemble": "output-ensemble weights as task-wise coefficients",
    "uniform": "uniform mix (c = 1/T)",
    "task": "learned task-wise coefficients",
    "layer": "learned layer-wise coefficients",
    "tensor": "learned tensor-wise coefficients",
    "distil": "coefficients at distil_granularity distilled from the output ensemble on photos (the person's unrated "
    "photos when given, else the rated ones)",
}
#: The candidate that is no set of coefficients: the personalized model scores as the output ensemble.
OUTPUTS = "outputs"
#: The candidates that learn coefficients in the network: one per granularity, and the distilled ensemble.
LEARNED_CANDIDATES = (*GRANULARITIES, "distil")
#: The candidates that learn nothing in the network and are coefficients.
SIMPLE_CANDIDATES = tuple(name for name in CANDIDATES if name not in (*LEARNED_CANDIDATES, OUTPUTS))
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
    # The default recipe, with the output ensemble itself among the candidates (`from_preset`).
    "ensemble": {},
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
        "what cv chooses from (default: the softmax mix, the best single model, the output ensemble's weights, "
        "coefficients learned at the granularity and coefficients distilled from the output ensemble; the "
        "uniform mix measured worst and wins only by chance, so it is left out, but learned coefficients may start "
        "from it; outputs, the output ensemble itself, scores with one pass per task model, so it competes only when "
        "listed, with the ensemble preset, or when it costs at most max_scoring_cost)",
        choices=CANDIDATES,
    )
    max_scoring_cost: float = option(
        1.5,
        "with the default candidates, the output ensemble itself (outputs) competes too when scoring with it costs at "
        "most this many times one model's encoder blocks per image: a bank that covers only the top blocks runs the "
        "frozen prefix once and the covered blocks once per task model (the demo's bank: 1.375x), a bank that covers "
        "the whole network T times; 0 keeps the default candidates one pass (merged weights); listed candidates are "
        "what they say",
        ">=0",
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
        "a candidate earlier in the list (the output ensemble first where it competes, then the softmax mix, then the "
        "best single model) wins when its criterion "
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
        10.0,
        "distil: weight of the distillation loss (1 - the Pearson correlation between the merged model's scores on "
        "photos and the output ensemble's) next to the rank loss on the ratings",
        ">=0",
    )
    distil_granularity: str = option(
        "tensor",
        "distil: the granularity of distilled coefficients (reproducing the output ensemble in one network takes "
        "more freedom than fitting a few ratings)",
        choices=GRANULARITIES,
    )
    distil_steps: int | None = option(
        None,
        "distil: optimisation steps, with cv the most it may take (default: twice steps; following a teacher on every "
        "photo takes longer than fitting a few ratings)",
        ">=1",
    )
    distil_learning_rate: float = option(0.15, "distil: AdamW learning rate of the distilled coefficients", ">0")
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
            raise InputTypeError(
                f"init must be one of {INITS}, Coefficients or a dict, received {type(self.init).__name__}"
            )

    @property
    def candidate_names(self) -> tuple[str, ...]:
        """The candidates `"cv"` compares, in the order that breaks ties (`CANDIDATES`)."""
        chosen = self.candidates or self.default_candidates
        return tuple(name for name in CANDIDATES if name in chosen)

    @property
    def default_candidates(self) -> tuple[str, ...]:
        """What `"cv"` compares when no candidates are given."""
        return ("single", "init", "ensemble", self.granularity)

    @property
    def default_recipe(self) -> bool:
        """Whether the candidates are the default ones (or those plus `"outputs"`, the `"ensemble"` preset's): then
        the distilled output ensemble may compete too (`model_selection.candidate_names`)."""
        return self.candidates is None or set(self.candidates) == {*self.default_candidates, OUTPUTS}

    def steps_of(self, candidate: str) -> int:
        """The most optimisation steps learned candidate ``candidate`` takes."""
        if candidate != "distil":
            return self.steps
        return self.distil_steps or 2 * self.steps

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PersonalizerConfig:
        """`"default"`: our recipe; `"paper"`: the authors' (tensor granularity, softmax(10 x SROCC) init, half-batch
        pairing, AdamW lr 1e-2 with PyTorch's default weight decay, 500 steps, batch 32, last step kept);
        `"ensemble"`: our recipe with the output ensemble itself (`"outputs"`) as a candidate whatever it costs (the
        default lets it compete only where it costs at most `max_scoring_cost` times one model). It scores better
        than the one-pass candidates for many tastes, but a model that wins with it runs the covered blocks once per
        task model (T + 1 passes of a part of the network instead of one) and saves as `export="ensemble"`."""
        if name not in _PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        config = cls(**{**_PRESETS[name], **overrides})
        if name == "ensemble" and config.candidates is None:
            config.candidates = (*config.candidate_names, OUTPUTS)
        return config

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
