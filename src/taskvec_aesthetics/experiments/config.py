"""What the few-shot protocol runs ([`BenchmarkConfig`]) and the methods it compares, in the library's one config style.

This module is torch-free: `benchmark --help` derives its flags from these fields without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..personalization.config import PersonalizerConfig
from ..utils.fields import check_fields, option

__all__ = ["BenchmarkConfig", "METHODS", "METHOD_LABELS"]

METHOD_LABELS: dict[str, str] = {
    "single": "single task model, zero-shot",
    "best_single": "best single task model (picked on the rated images)",
    "uniform": "uniform average of task vectors (c = 1/T)",
    "init": "softmax(10 x SROCC) init",
    "paper": "paper recipe (tensor-wise, half-batch pairs, last of {steps} steps)",
    "default": "our default (cross-validated choice among coefficients and, where cheap, the output ensemble)",
    "one_pass": "our default kept one pass (max_scoring_cost=0: merged weights)",
    "default_ensemble": "our default with the output ensemble competing (preset 'ensemble'; T x inference if it wins)",
    "head_finetune": "fine-tune the head of the best single model",
    "full_finetune": "fine-tune the base (all parameters the bank covers)",
    "ensemble": "learned weighted ensemble of the T models' outputs (T x inference)",
}
METHODS: tuple[str, ...] = tuple(METHOD_LABELS)


@dataclass
class BenchmarkConfig:
    """What the protocol runs.

    Each field's help says what it does (the command line's `benchmark --help` lists them). At more length:

    Args:
        shots: numbers k of rated images per user.
        repeats: random draws of the k rated images per user and k.
        seed: seed of the draws (and of every method).
        methods: which of `METHODS` to run.
        personalizer: our recipe's config.
        paper: the paper recipe's config.
        baseline_steps: optimisation steps of the fine-tuning baselines (fixed: no test-set selection; the output
            ensemble is fitted to convergence, as the `"outputs"` candidate fits it).
        head_learning_rate, full_learning_rate: their Adam learning rates.
        min_test_images: skip a user at a k that leaves fewer test images than this.
        score_candidates: also refit every candidate our default cross-validated and record its test SROCC next to
            its cross-validation row (to study selection rules; costs one more fit per learned candidate).
        transductive: our default also gets every photo of the pool, the test photos included but never a rating of
            one, as unlabeled photos (`Personalizer.fit_encoded`'s ``unlabeled``): the transductive setting, which
            tables must name. Otherwise it sees only the rated photos.
        workers: processes that run the draws in parallel, torch's threads shared among them; 1 runs them here.
            Small steps use threads poorly, so on 2 CPU cores 2 workers of 1 thread run the demo's draws about 1.5x
            faster than 1 process of 2 threads (each fit takes longer: the table's seconds per fit are measured so).
            On a GPU the draws always run here.
        progress: show a progress bar over draws (user, k and repeat).
    """

    shots: tuple[int, ...] = option((10, 100), "numbers k of rated images per user, each >= 2", ">=2")
    repeats: int = option(1, "random draws of the k rated images per user and k", ">=1")
    seed: int = option(0, "seed of the draws (and of every method)")
    methods: tuple[str, ...] = option(
        METHODS, f"methods to run, of {', '.join(METHODS)} (default: all)", choices=METHODS, metavar="METHOD"
    )
    personalizer: PersonalizerConfig = field(
        default_factory=PersonalizerConfig, metadata={"help": "our recipe's config"}
    )
    paper: PersonalizerConfig = field(
        default_factory=lambda: PersonalizerConfig.from_preset("paper"), metadata={"help": "the paper recipe's config"}
    )
    baseline_steps: int = option(
        100, "optimisation steps of the fine-tuning baselines (fixed: no test-set selection)", ">=1"
    )
    head_learning_rate: float = option(1e-3, "Adam learning rate of head_finetune", ">0")
    full_learning_rate: float = option(1e-4, "Adam learning rate of full_finetune", ">0")
    min_test_images: int = option(10, "skip a user at a k that leaves fewer test images than this", ">=2")
    score_candidates: bool = option(
        False, "also refit every candidate our default cross-validated and record its test SROCC"
    )
    transductive: bool = option(
        False, "our default also gets the pool's photos, test photos included (never a rating), as unlabeled photos"
    )
    workers: int = option(
        1, "processes that run the draws in parallel on a CPU, torch's threads shared among them", ">=1"
    )
    progress: bool = option(True, "show a progress bar over draws", cli=False)  # the command line's --quiet sets it

    def __post_init__(self) -> None:
        check_fields(self)
