"""Optimisation of coefficients: the network run with merged parameters, its steps, micro-batches, streamed
gradients, checkpointing and the activation budget.

Every step runs only the part of the network after the frozen prefix, with merged parameters
theta_0 + sum_t c[g(p), t] * tau_t[p], as a functional call: the base model is never modified. `Optimiser` holds the
network, the bank's stacked task vectors and the coefficient layouts; `Personalizer` extends it with the fit.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import DivergedError, InputError
from ..processing import open_image
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.coefficients import Coefficients
from ..task_vectors.merging import (
    CoefficientLayout,
    coefficient_layout,
    functional_forward,
    merge_parameters,
    streamed_coefficient_grad,
)
from .config import PersonalizerConfig
from .inputs import Encoded, EncodedRatings, Unlabeled
from .model_selection import Scores

if TYPE_CHECKING:
    from ..modeling import AestheticModel

__all__ = [
    "ACTIVATIONS_PER_BLOCK",
    "CPU_ACTIVATION_BUDGET_MB",
    "Distillation",
    "Optimiser",
    "resolve_device",
    "resolve_dtype",
]

#: Activations an encoder block keeps for its backward pass, in hidden states of its input (transformer blocks: the
#: layer norms, q/k/v, attention output and probabilities, the 4x MLP before and after its activation), an estimate
#: that sets the micro-batch from `activation_budget_mb`. A ViT-L/14 step at batch 32 in float32 on a GPU held about
#: 20 per block (`benchmarks/paper_scale.py`), so 24 errs on the safe side.
ACTIVATIONS_PER_BLOCK = 24
#: The activation budget on the CPU when none is given (on a GPU: half its free memory).
CPU_ACTIVATION_BUDGET_MB = 1024


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from a name; `"auto"` or None is the GPU when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', received {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for, but this machine has no usable GPU; use 'cpu' or 'auto'")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """A torch dtype from a name; `"auto"` is bfloat16 on a GPU (under autocast), float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


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
class Distillation:
    """A training batch plus photos: the rank loss on the batch, and the distillation loss that pulls the merged
    model's scores on the photos toward the teacher's (1 - their Pearson correlation: only the order and spacing
    matter, not the scale). The photos are unlabeled ones, or (``unlabeled=None``) the batch's own images, which
    one forward pass then serves for both losses."""

    batch: Encoded
    unlabeled: torch.Tensor | None  # [B, ...] prefix rows, or None: the batch's images
    teacher: torch.Tensor  # [B] the output ensemble's scores on them
    weight: float

    @property
    def prefix(self) -> torch.Tensor:
        return self.batch.prefix if self.unlabeled is None else torch.cat([self.batch.prefix, self.unlabeled])

    def split(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores of the batch, and the distillation loss of the scores of the photos."""
        n = self.batch.prefix.shape[0]
        photos = scores if self.unlabeled is None else scores[n:]
        student = photos - photos.mean()
        teacher = (self.teacher - self.teacher.mean()).to(scores.device, scores.dtype)
        cosine = torch.sum(student * teacher) / (student.norm() * teacher.norm()).clamp_min(1e-12)
        return scores[:n], self.weight * (1.0 - cosine)


class Optimiser:
    """The network of a model and bank under merged parameters: the frozen prefix's encoding, forward passes,
    predictions (of any coefficients, and of the base and each task model) and optimisation steps.

    Args:
        model: the base model the bank was built on.
        bank: the task-vector bank.
        config: the `PersonalizerConfig` (device, dtype, granularity, gradient, micro-batches, learning rates).
    """

    def __init__(self, model: AestheticModel, bank: TaskVectorBank, config: PersonalizerConfig) -> None:
        self.config = config
        self.model = model
        self.bank = bank
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
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
            # transformers types `to` as taking only a model: a device and dtype are what it receives here.
            self._network = copy.deepcopy(model).to(self.device, weights).eval()  # type: ignore[arg-type]
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
        self._bar: Any = None  # the one progress bar of a fit (`fit_encoded`), advanced by every step
        # Resolved once, with the network and bank in place: a budget read at every step would drift with the
        # allocator, and so would the micro-batch.
        self.activation_budget_bytes = self._activation_budget_bytes()
        values = len(bank) * sum(t[0].numel() for t in self._stacked.values())
        streamed = self.config.gradient == "streamed" or (
            self.config.gradient == "auto" and values > self.config.streamed_threshold
        )
        self.gradient = "streamed" if streamed else "autograd"

    @property
    def network(self) -> AestheticModel:
        """The network that runs the fits: the model itself, or its copy on the fit's device and precision. It is
        only ever called with substituted parameters, never changed."""
        return self._network

    @property
    def base_parameters(self) -> dict[str, torch.Tensor]:
        """The base model's parameters that the bank covers (detached), on the fit's device."""
        return self._base

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

    @torch.no_grad()
    def encode(self, images: Sequence[Any] | torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Output of the frozen prefix for images (PIL, paths or pixel values), computed once and reused.

        When the bank covers the embeddings, nothing is frozen and this is the preprocessed pixel values.
        """
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

    # -- prediction ----------------------------------------------------------------------------------------------
    def _layout_for(self, values: torch.Tensor) -> CoefficientLayout:
        """The layout of `[G, T]` values: task granularity for one row, else the configured one."""
        if values.shape[0] == 1:
            return self.layout_of("task")
        for layout in (self.layout, *self._layouts.values()):
            if layout.num_groups == values.shape[0]:
                return layout
        raise InputError(
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

    def model_scores(self, prefix: torch.Tensor) -> torch.Tensor:
        """`[T + 1, N]` scores of the base model and of each single task model on encoded images: what every fit on
        these images starts from (`EncodedRatings.model_scores`)."""
        return torch.cat([self.predict(torch.zeros(1, len(self.bank)), prefix)[None], self.task_scores(prefix)])

    def _scores(self, encoded: Encoded) -> Scores:
        scores = encoded.model_scores
        if scores is None:
            scores = self.model_scores(encoded.prefix)
        elif scores.shape != (len(self.bank) + 1, encoded.prefix.shape[0]):
            raise InputError(
                f"model_scores must be [T + 1, N] = [{len(self.bank) + 1}, {encoded.prefix.shape[0]}] (the base, then "
                f"each task model, on each image), received {list(scores.shape)}"
            )
        scores = scores.double()
        return Scores(
            encoded.unit_scores(scores[0]),
            encoded.unit_scores(scores[1:]),
            encoded.target.double(),
            encoded.metric,
            scores,
        )

    def _unlabeled(self, prefix: torch.Tensor | None, model_scores: torch.Tensor | None) -> Unlabeled | None:
        """Encoded unlabeled photos with each task model's scores on them (given once per pool, else computed)."""
        if prefix is None:
            return None
        if model_scores is None:
            return Unlabeled(prefix, self.task_scores(prefix))
        if model_scores.shape != (len(self.bank) + 1, prefix.shape[0]):
            raise InputError(
                f"unlabeled_scores must be [T + 1, M] = [{len(self.bank) + 1}, {prefix.shape[0]}] (the base, then each "
                f"task model, on each unlabeled photo), received {list(model_scores.shape)}"
            )
        return Unlabeled(prefix, model_scores[1:])

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

    # -- optimisation ------------------------------------------------------------------------------------------
    def _loss(self, scores: torch.Tensor, batch: Encoded | Distillation) -> torch.Tensor:
        if isinstance(batch, Distillation):
            rated, distillation = batch.split(scores)
            return self._loss(rated, batch.batch) + distillation
        loss = scores.sum() * 0.0
        if "pairwise" in self.config.loss:
            loss = loss + batch.loss(scores, self.config.pairing)
        if "mse" in self.config.loss:
            if not isinstance(batch, EncodedRatings):
                raise InputError("loss='mse' needs ratings on a scale; preferences are fitted with loss='pairwise'")
            ratings = batch.ratings.to(scores.device)
            low, high = self.model.config.score_range
            predicted = (scores - low) / (high - low)
            span = (ratings.max() - ratings.min()).clamp_min(1e-12)
            loss = loss + torch.mean((predicted - ((ratings - ratings.min()) / span).to(scores.dtype)) ** 2)
        return loss

    def _activation_budget_bytes(self) -> float:
        """`config.activation_budget_mb`, else half the GPU's free memory, else 1 GiB on the CPU."""
        if self.config.activation_budget_mb is not None:
            return self.config.activation_budget_mb * 2**20
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free / 2
        return float(CPU_ACTIVATION_BUDGET_MB * 2**20)

    def micro_batch_size(self, batch_size: int) -> int:
        """Images per micro-batch for a step on ``batch_size`` images: `config.micro_batch_size`, else the most whose
        estimated activations fit `config.activation_budget_mb` (the whole batch when it fits)."""
        cfg = self.config
        if cfg.micro_batch_size is not None:
            return min(cfg.micro_batch_size, batch_size)
        if self._activation_bytes is None:
            return batch_size
        fits = int(self.activation_budget_bytes // self._activation_bytes)
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

    def _weight_gradient(self, leaves: Mapping[str, torch.Tensor], batch: Encoded | Distillation) -> torch.Tensor:
        """Accumulate dL/dW of the batch's loss into ``leaves`` (the network's substituted parameters); the loss.

        The pairwise loss needs every score of the batch, but not every activation at once: the scores are computed
        without a graph, d loss / d scores is taken, and then each micro-batch's scores are backpropagated with their
        slice of it. By the chain rule this is exactly the full batch's gradient.
        """
        prefix = batch.prefix
        self._estimate_activations(prefix)
        size, micro = prefix.shape[0], self.micro_batch_size(prefix.shape[0])
        params = {f"network.{name}": tensor for name, tensor in leaves.items()}

        def backward(encoded: torch.Tensor, objective: Any) -> torch.Tensor:
            return torch.func.functional_call(
                self._runner, params, (objective, self._inputs(encoded), self._autocast()), strict=False
            )

        with self._checkpointing():
            if micro >= size:  # one pass: forward with a graph, loss, backward
                return backward(prefix, lambda scores: self._loss(scores, batch))
            with torch.no_grad():
                scores = torch.cat(
                    [self.forward(leaves, prefix[i : i + micro]).scores.float() for i in range(0, size, micro)]
                )
            scores.requires_grad_(True)
            loss = self._loss(scores, batch)
            (slope,) = torch.autograd.grad(loss, scores)
            for i in range(0, size, micro):
                part = slope[i : i + micro]
                backward(prefix[i : i + micro], lambda scores, part=part: torch.sum(scores * part))
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
        self,
        values: torch.Tensor,
        head: dict[str, torch.Tensor],
        batch: Encoded | Distillation,
        init: torch.Tensor,
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
            grad = grad.to(values.device, values.dtype)
            values.grad = grad if values.grad is None else values.grad + grad
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
        self,
        start: torch.Tensor,
        train: Encoded,
        steps: int,
        watch: torch.Tensor | None = None,
        teacher: tuple[torch.Tensor | None, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[float], list[torch.Tensor]]:
        """Optimise `[G, T]` coefficients from ``start`` on ``train`` for ``steps`` steps.

        With ``teacher`` (unlabeled photos' prefix rows and the teacher's scores on them), each step also distils the
        teacher on `batch_size` of those photos (see `Distillation`), at `distil_learning_rate`; with prefix rows
        None, the teacher's scores are of ``train``'s images, in order, and each step distils on its own batch.
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
        learning_rate = cfg.learning_rate if teacher is None else cfg.distil_learning_rate
        optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=cfg.weight_decay)
        losses: list[float] = []
        watched: list[torch.Tensor] = []

        def look() -> None:
            if watch is not None:
                watched.append(self.predict(values.detach(), watch, head={n: d.detach() for n, d in head.items()}))

        look()
        order, cursor = torch.randperm(len(train), generator=generator), 0
        for step in range(1, steps + 1):
            if len(train) <= cfg.batch_size:
                index = torch.randperm(len(train), generator=generator)
            else:
                if cursor + cfg.batch_size > len(train):
                    order, cursor = torch.randperm(len(train), generator=generator), 0
                index, cursor = order[cursor : cursor + cfg.batch_size], cursor + cfg.batch_size
            optimizer.zero_grad(set_to_none=True)
            rated = train.subset(index)
            batch: Encoded | Distillation = rated
            if teacher is not None:
                unlabeled, taught = teacher
                if unlabeled is None:  # the teacher scored the rated images themselves
                    batch = Distillation(rated, None, taught[index], cfg.distil_weight)
                else:
                    photos = torch.randperm(unlabeled.shape[0], generator=generator)[: cfg.batch_size]
                    batch = Distillation(rated, unlabeled[photos], taught[photos], cfg.distil_weight)
            losses.append(self._step_gradient(values, head, batch, start))
            if self._bar is not None:
                self._bar.update(1)
            if values.grad is None or not torch.isfinite(values.grad).all():
                raise DivergedError(f"non-finite coefficient gradient at step {step}; lower the learning rate")
            optimizer.step()
            if step % cfg.eval_every == 0 or step == steps:
                look()
        return values.detach(), {n: d.detach() for n, d in head.items()}, losses, watched
