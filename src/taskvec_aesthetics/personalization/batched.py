"""Several users fitted at once: their coefficient optimisations run as one vectorised optimisation.

`Personalizer.fit_encoded` spends most of its time in `_optimise` (the learned candidates, once per fold and once for
the refit), a few dozen small forward and backward passes whose cost is mostly per-call overhead. `BatchedPersonalizer`
runs each user's `fit_encoded` unchanged (folds, simple candidates, selection, report: the same code) as a cooperative
task, one at a time; every task that reaches `_optimise` hands its request over and waits. When all tasks wait or are
done, the requests are run together: their coefficients stacked `[B, G, T]`, one AdamW over the stack (elementwise,
so the same as B separate AdamWs), and the network evaluated once per step for all of them with `torch.func.vmap`
over `functional_call` (each problem merges its own weights). Each problem draws its minibatches from its own
generator exactly as `_optimise` does; minibatches of different sizes are padded and masked.

1x1 convolutions, and depthwise ones on small feature maps, are computed as matrix products inside the vectorised
forward: vmap would turn them into grouped convolutions, several times slower on a CPU than the products they equal;
attention is written out for the same reason (vmap has no batching rule for the fused CPU kernel).

Configurations the vectorised step does not cover (an adapted head, the paper's half-batch pairing, the streamed
gradient, inputs with more than ratings, the distilled candidate) fall back to `Personalizer._optimise`, one request
at a time: the results are the same, only slower.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import DivergedError
from ..task_vectors.coefficients import Coefficients
from .inputs import EncodedRatings
from .personalizer import Personalizer
from .report import PersonalizationReport

__all__ = ["BatchedPersonalizer"]

#: Fields of `EncodedRatings` the vectorised step knows (`model_scores` only serves the simple candidates); other
#: inputs (e.g. preference pairs) take the plain path.
_KNOWN_INPUT_FIELDS = {"prefix", "ratings", "keys", "duplicates", "model_scores"}


# -- convolutions as matrix products ---------------------------------------------------------------------------------
def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _conv2d_as_matmul(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d as einsums for 1x1 kernels and small depthwise ones; None for any other convolution."""
    if isinstance(padding, str) or input.dim() != 4:
        return None
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    out_channels, per_group, kh, kw = weight.shape
    channels = input.shape[1]
    if groups == 1 and (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
        out = torch.einsum("nchw,oc->nohw", input, weight[:, :, 0, 0])
    elif groups == channels == out_channels and per_group == 1 and dilation == (1, 1):
        n, _, h, w = input.shape
        shifts = _depthwise_shifts(h, w, kh, kw, stride, padding)
        if shifts is None:
            return None
        # out[n, c, p] = sum_q x[n, c, q] K_c[p, q], K_c gathered from the kernel by a constant 0/1 tensor.
        kernel = torch.einsum("ck,kpq->cpq", weight.reshape(channels, kh * kw), shifts.to(weight.dtype))
        out = torch.einsum("ncq,cpq->ncp", input.reshape(n, channels, h * w), kernel)
        out = out.reshape(n, channels, (h + 2 * padding[0] - kh) // stride[0] + 1, -1)
    else:
        return None
    return out if bias is None else out + bias.view(1, -1, 1, 1)


#: Largest (output positions x input positions) of a depthwise convolution computed as a matrix product.
_DEPTHWISE_MATMUL_LIMIT = 1024


def _depthwise_shifts(h: int, w: int, kh: int, kw: int, stride, padding) -> torch.Tensor | None:
    """`[kh * kw, P_out, P_in]` 0/1: kernel tap k links output position p to input position q (None if too big)."""
    rows = (h + 2 * padding[0] - kh) // stride[0] + 1
    cols = (w + 2 * padding[1] - kw) // stride[1] + 1
    if rows * cols * h * w > _DEPTHWISE_MATMUL_LIMIT:
        return None
    shifts = torch.zeros(kh * kw, rows * cols, h * w)
    for i in range(rows):
        for j in range(cols):
            for a in range(kh):
                for b in range(kw):
                    y, x = i * stride[0] - padding[0] + a, j * stride[1] - padding[1] + b
                    if 0 <= y < h and 0 <= x < w:
                        shifts[a * kw + b, i * cols + j, y * w + x] = 1.0
    return shifts


def _attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **others):
    """Scaled dot-product attention written out (vmap has no batching rule for the fused CPU kernel); None when
    dropout, a causal mask or another option asks for the fused one."""
    if dropout_p or is_causal or others:
        return None
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = (query @ key.transpose(-2, -1)) * scale
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    return torch.softmax(logits, dim=-1) @ value


class _VectorisableOps(TorchFunctionMode):
    """Inside the vectorised forward: convolutions and attention as the matrix products they equal."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = None
        if func is F.conv2d or func is torch.conv2d:
            out = _conv2d_as_matmul(*args, **kwargs)
        elif func is F.scaled_dot_product_attention:
            out = _attention(*args, **kwargs)
        return func(*args, **kwargs) if out is None else out


# -- cooperative tasks -----------------------------------------------------------------------------------------------
@dataclass
class _Request:
    start: torch.Tensor
    train: EncodedRatings
    steps: int
    watch: torch.Tensor | None
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Task:
    """One user's `fit_encoded`, run in its own thread but only while the scheduler lets it (one at a time)."""

    personalizer: BatchedPersonalizer
    encoded: EncodedRatings
    unlabeled: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    request: _Request | None = None
    outcome: Any = None
    done: bool = False
    _go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _paused: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self._go.acquire()
        self.personalizer._task.current = self
        try:
            self.outcome = self.personalizer.fit_encoded(self.encoded, *self.unlabeled)
        except BaseException as error:  # handed to the caller, like a sequential fit's exception
            self.outcome = error
        self.done = True
        self._paused.release()

    def resume(self) -> None:
        """Run the task until it asks for an optimisation or finishes."""
        self.request = None
        self._go.release()
        self._paused.acquire()

    def ask(self, request: _Request) -> Any:
        """Called from the task's thread: hand ``request`` to the scheduler and wait for its result."""
        self.request = request
        self._paused.release()
        self._go.acquire()
        if request.error is not None:
            raise request.error
        return request.result


# -- the batched personalizer ----------------------------------------------------------------------------------------
class BatchedPersonalizer(Personalizer):
    """A `Personalizer` that fits several users at once (`fit_encoded_many`); `fit_encoded` fits one, as usual.

    Every user's result equals a `Personalizer`'s (same config) to float tolerance: the cross-validation, candidates,
    selection and report are `Personalizer`'s own code; only the optimisation steps of several users are computed
    together. Results depend on which users share a call only through float rounding; callers that need bit-identical
    output across runs keep the groups fixed (as `many.personalize_many` does).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._task = threading.local()

    @property
    def vectorised(self) -> bool:
        """Whether this config's optimisation steps can be vectorised over users (else they run one by one)."""
        cfg = self.config
        names = {f.name for f in dataclasses.fields(EncodedRatings)}
        return (
            not cfg.adapt_head
            and cfg.pairing == "all"
            and self.gradient == "autograd"
            and set(cfg.loss.split("+")) <= {"pairwise", "mse"}
            and names <= _KNOWN_INPUT_FIELDS
        )

    def fit_encoded_many(
        self,
        encoded: Sequence[EncodedRatings],
        unlabeled: torch.Tensor | None = None,
        unlabeled_scores: torch.Tensor | None = None,
    ) -> list[tuple[Coefficients, PersonalizationReport] | BaseException]:
        """Fit every user of ``encoded`` (with the same unlabeled photos, see `Personalizer.fit_encoded`); returns,
        per user, `(coefficients, report)` or the exception its fit raised."""
        tasks = [_Task(self, item, (unlabeled, unlabeled_scores)) for item in encoded]
        for task in tasks:
            task.start()
        waiting = tasks
        while waiting:
            for task in waiting:
                task.resume()
            waiting = [task for task in waiting if not task.done]
            self._run_requests([task.request for task in waiting if task.request is not None])
        return [task.outcome for task in tasks]

    def _optimise(self, start, train, steps, watch=None, teacher=None):
        task = getattr(self._task, "current", None)
        if task is None or not self.vectorised or type(train) is not EncodedRatings or teacher is not None:
            return super()._optimise(start, train, steps, watch, teacher)
        return task.ask(_Request(start, train, steps, watch))

    def _run_requests(self, requests: list[_Request]) -> None:
        by_groups: dict[int, list[_Request]] = {}
        for request in requests:
            by_groups.setdefault(request.start.shape[0], []).append(request)
        for group in by_groups.values():
            try:
                self._optimise_together(group)
            except BaseException as error:  # e.g. out of memory: every request of the group gets the error
                for request in group:
                    request.error = error

    # -- the vectorised optimisation ----------------------------------------------------------------------------------
    def _merged_together(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Merged parameters `[B, *shape]` of `[B, G, T]` coefficients: one matrix product per parameter, reading
        each task vector once for all B problems (merging inside vmap would copy the task vectors B times)."""
        layout = self._layout_for(values[0])
        merged = {}
        for name, group in layout.group_of.items():
            stacked = self._stacked[name]
            weights = values[:, group, :].to(self.device, stacked.dtype)
            delta = (weights @ stacked.reshape(stacked.shape[0], -1)).view(len(values), *stacked.shape[1:])
            merged[name] = self._base[name] + delta.to(self._base[name].dtype)
        return merged

    def _scores_of(self, values: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """`[B, M]` scores of `[B, M, ...]` encoded inputs under `[B, G, T]` coefficients (problem b: its own merge)."""

        def one(params: dict[str, torch.Tensor], problem_inputs: torch.Tensor) -> torch.Tensor:
            return self.forward(params, problem_inputs).scores

        with _VectorisableOps():
            return torch.func.vmap(one)(self._merged_together(values), inputs)

    def _masked_loss(self, scores: torch.Tensor, ratings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`[B]` losses of `Personalizer._loss` over each problem's real rows (padding masked out)."""
        ratings = ratings.to(scores.dtype)
        loss = scores.new_zeros(scores.shape[0])
        if "pairwise" in self.config.loss:
            above = (ratings[:, :, None] > ratings[:, None, :]) & mask[:, :, None] & mask[:, None, :]
            diff = scores[:, :, None] - scores[:, None, :]
            pairs = above.sum(dim=(1, 2))
            total = (F.softplus(-diff) * above).sum(dim=(1, 2))
            loss = loss + torch.where(pairs > 0, total / pairs.clamp_min(1), torch.zeros_like(total))
        if "mse" in self.config.loss:
            low, high = self.model.config.score_range
            predicted = (scores - low) / (high - low)
            big = torch.finfo(ratings.dtype).max
            lowest = torch.where(mask, ratings, big).amin(dim=1, keepdim=True)
            highest = torch.where(mask, ratings, -big).amax(dim=1, keepdim=True)
            target = (ratings - lowest) / (highest - lowest).clamp_min(1e-12)
            count = mask.sum(dim=1).clamp_min(1)
            loss = loss + ((predicted - target) ** 2 * mask).sum(dim=1) / count
        return loss

    @staticmethod
    def _padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack tensors of different lengths into `[B, M, ...]` (zeros after each one's end) and a `[B, M]` mask."""
        longest = max(len(r) for r in rows)
        out = rows[0].new_zeros((len(rows), longest, *rows[0].shape[1:]))
        mask = torch.zeros(len(rows), longest, dtype=torch.bool)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
            mask[i, : len(r)] = True
        return out, mask

    def _watch(self, values: torch.Tensor, requests: list[_Request], which: list[int], watched: list[list]) -> None:
        if not which:
            return
        watches = [watch for i in which if (watch := requests[i].watch) is not None]  # ``which`` have one each
        inputs, _ = self._padded([watch.to(self.device, self.dtype) for watch in watches])
        with torch.no_grad():
            scores = self._scores_of(values[which].to(self.device, self.dtype), inputs).float().cpu()
        for row, i in enumerate(which):
            watched[i].append(scores[row, : len(watches[row])])

    def _optimise_together(self, requests: list[_Request]) -> None:
        """`Personalizer._optimise` for every request at once (same minibatches, same AdamW, same evaluations)."""
        cfg = self.config
        count = len(requests)
        starts = torch.stack([r.start for r in requests])
        values = starts.clone().requires_grad_(True)
        optimizer = torch.optim.AdamW([values], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        generators = [torch.Generator().manual_seed(cfg.seed) for _ in requests]
        orders = [torch.randperm(len(r.train), generator=g) for r, g in zip(requests, generators)]
        cursors = [0] * count
        losses: list[list[float]] = [[] for _ in requests]
        watched: list[list[torch.Tensor]] = [[] for _ in requests]
        finals: list[torch.Tensor | None] = [None] * count
        self._watch(values.detach(), requests, [i for i, r in enumerate(requests) if r.watch is not None], watched)
        for step in range(1, max(r.steps for r in requests) + 1):
            active = [i for i, r in enumerate(requests) if step <= r.steps]
            batches = []
            for i in active:
                train = requests[i].train
                if len(train) <= cfg.batch_size:
                    index = torch.randperm(len(train), generator=generators[i])
                else:
                    if cursors[i] + cfg.batch_size > len(train):
                        orders[i], cursors[i] = torch.randperm(len(train), generator=generators[i]), 0
                    index, cursors[i] = (
                        orders[i][cursors[i] : cursors[i] + cfg.batch_size],
                        cursors[i] + cfg.batch_size,
                    )
                batches.append(train.subset(index))
            inputs, mask = self._padded([b.prefix for b in batches])
            ratings, _ = self._padded([b.ratings for b in batches])
            optimizer.zero_grad(set_to_none=True)
            scores = self._scores_of(values[active], inputs.to(self.device, self.dtype))
            loss = self._masked_loss(scores, ratings.to(self.device), mask.to(self.device))
            if cfg.init_pull > 0:
                loss = loss + cfg.init_pull * ((values[active] - starts[active]) ** 2).sum(dim=(1, 2)).to(loss.dtype)
            loss.sum().backward()
            grad = values.grad
            assert grad is not None  # set by the backward pass above
            finite = torch.isfinite(grad).flatten(1).all(dim=1)
            for row, i in enumerate(active):
                losses[i].append(float(loss[row].detach()))
                if not finite[i] and requests[i].error is None:
                    requests[i].error = DivergedError(
                        f"non-finite coefficient gradient at step {step}; lower the learning rate"
                    )
            # A diverged problem must not disturb the others' AdamW state: its gradient is zeroed.
            grad[~finite] = 0.0
            optimizer.step()
            look = [
                i
                for i in active
                if requests[i].watch is not None and (step % cfg.eval_every == 0 or step == requests[i].steps)
            ]
            self._watch(values.detach(), requests, look, watched)
            for i in active:
                if step == requests[i].steps:
                    finals[i] = values.detach()[i].clone()
        for i, request in enumerate(requests):
            final = finals[i] if finals[i] is not None else starts[i]
            request.result = (final, {}, losses[i], watched[i])
