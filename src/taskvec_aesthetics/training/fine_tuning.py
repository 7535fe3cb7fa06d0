"""Fine-tuning a base model on one database with Accelerate: the training loop, its evaluations and its outputs.

The same `finetune` runs as one CPU process or as N GPU processes under `accelerate launch`:

```bash
taskvec-aesthetics init-base --encoder openai/clip-vit-large-patch14 --output base
accelerate launch --config_file examples/accelerate_config.yaml -m taskvec_aesthetics.cli finetune \\
    --database koniq10k --root /data/koniq10k --base base --output runs/koniq10k
taskvec-aesthetics build-bank runs/* --base base --output bank
```

Its examples are in `scored_images`, its checkpoints in `checkpoints`; `bank_building` makes a bank of the runs.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..backbones import EMBEDDINGS_GROUP, block_group
from ..constants import CONFIG_FILE
from ..data import get_database_spec, load_database
from ..errors import InputError, MissingFileError
from ..evaluation.metrics import plcc, srocc
from ..hub.references import Reference
from ..losses import emd_loss, pairwise_rank_loss
from ..modeling import HEAD_GROUP, AestheticModel
from ..task_vectors.fingerprint import model_fingerprint
from ..utils.io import write_json
from ..utils.progress import transformers_bars_off
from .checkpoints import (
    CHECKPOINT_MODEL_FILE,
    CHECKPOINT_OPTIMIZER_FILE,
    RESUME_KEYS,
    checkpoint_candidates,
    load_checkpoint,
    optimizer_state_dict,
    run_checkpoints,
    save_checkpoint,
)
from .config import FinetuneConfig
from .scored_images import ScoredImages, caches_prefix, check_dataset, encode_prefix

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "finetune_database", "RESULT_FILE", "MODEL_DIR"]

logger = logging.getLogger(__name__)

RESULT_FILE = "finetune_result.json"
MODEL_DIR = "model"


@dataclass
class FinetuneResult:
    """What `finetune` produced.

    Attributes:
        model: the fine-tuned model (unwrapped, on the training device).
        metrics: final evaluation `{"srocc", "plcc"}` (empty without an evaluation set).
        history: one entry per evaluation: epoch, step, mean training loss, srocc, plcc.
        num_images: size of the training set.
        num_eval_images: evaluated examples, each counted once across processes.
        output_dir: the run folder.
    """

    model: AestheticModel
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    num_images: int
    num_eval_images: int
    output_dir: Path


def _train_mode(model: AestheticModel, prefix_blocks: int | None) -> None:
    """Dropout on in what is trained. The frozen prefix runs in eval mode: it is a fixed feature extractor (no
    stochastic depth), as when personalization caches its output. BatchNorm statistics stay frozen: they are not part
    of a task vector, so they must not drift."""
    model.train()
    if prefix_blocks is not None:
        adapter = model.adapter
        for module in (*adapter.embedding_modules, *adapter.blocks[:prefix_blocks]):
            module.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _freeze(model: AestheticModel, prefix_blocks: int | None, probe: torch.Tensor) -> None:
    groups = model.parameter_groups()
    if prefix_blocks is not None:
        if prefix_blocks > model.adapter.num_blocks:
            raise InputError(
                f"freeze_prefix_blocks={prefix_blocks}, but the encoder has {model.adapter.num_blocks} blocks"
            )
        frozen = {EMBEDDINGS_GROUP, *(block_group(i) for i in range(prefix_blocks))}
        for name, param in model.named_parameters():
            param.requires_grad_(groups[name] not in frozen)
    # Parameters the forward never reaches (e.g. DINOv2's mask token) get no gradient; freezing them lets
    # DistributedDataParallel run without find_unused_parameters and leaves them exactly as in the base.
    model.eval()
    model(pixel_values=probe).scores.sum().backward()
    for param in model.parameters():
        param.requires_grad_(param.grad is not None)
        param.grad = None


def _optimizer(model: AestheticModel, config: FinetuneConfig) -> torch.optim.Optimizer:
    groups = model.parameter_groups()
    buckets: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            lr = config.lr_head if groups[name] == HEAD_GROUP else config.lr_encoder
            buckets.setdefault((lr, config.weight_decay if param.ndim > 1 else 0.0), []).append(param)
    return torch.optim.AdamW([{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in buckets.items()])


def _loss(
    model: AestheticModel, output: Any, batch: Mapping[str, torch.Tensor], kind: str, rank: float
) -> torch.Tensor:
    low, high = model.config.score_range
    scores = output.scores.float()
    if kind == "emd":
        loss = emd_loss(output.distribution.float(), batch["distribution"])
    else:
        loss = torch.mean(((scores - batch["score"]) / (high - low)) ** 2)
    if rank:  # on the expected-bin scale (1..num_bins), whatever the score range
        loss = loss + rank * pairwise_rank_loss(scores * (model.config.num_bins - 1) / (high - low), batch["score"])
    return loss


def _inputs(batch: Mapping[str, torch.Tensor], prefix_blocks: int | None) -> dict[str, Any]:
    """The model's inputs from a batch: pixels, or the frozen prefix's cached output."""
    if "prefix_hidden" in batch:
        return {"prefix_hidden": batch["prefix_hidden"], "prefix_blocks": prefix_blocks}
    return {"pixel_values": batch["pixel_values"]}


@torch.no_grad()
def _evaluate(
    accelerator: Accelerator, model: nn.Module, loader: DataLoader, prefix_blocks: int | None
) -> tuple[dict[str, float], int]:
    """SROCC and PLCC over ``loader``; the model is left in eval mode."""
    model.eval()
    preds, targets = [], []
    for batch in loader:
        scores = model(**_inputs(batch, prefix_blocks)).scores.float()
        # Drops the examples repeated to even out the last batch across processes.
        pred, target = accelerator.gather_for_metrics((scores, batch["score"]))
        preds.append(pred.cpu())
        targets.append(target.cpu())
    pred, target = torch.cat(preds), torch.cat(targets)
    if len(pred) < 2:
        return {"srocc": math.nan, "plcc": math.nan}, len(pred)
    return {"srocc": srocc(pred, target), "plcc": plcc(pred, target)}, len(pred)


def save_model_dir(model: AestheticModel, directory: Path) -> None:
    """Save a model this library has just built (`save_pretrained`, one transaction) and record where it lives."""
    with transformers_bars_off():  # a save on the user's behalf: no "Writing model shards" bar
        model.save_pretrained(directory)
    model.source = Reference.local(directory)


def _dropout_seed(seed: int, epoch: int, batch: int, process: int, num_processes: int) -> int:
    # Dropout depends only on where a micro-batch is in the run, so a resumed run draws the very same masks.
    return (seed * 1_000_003 + (epoch * 10_000_019 + batch) * num_processes + process) % (2**63 - 1)


def finetune(
    base_model: AestheticModel,
    train_ds: Any,
    eval_ds: Any | None,
    config: FinetuneConfig,
    *,
    database: str | None = None,
    score_range: Sequence[float] | None = None,
    resume_from_checkpoint: str | Path | bool | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of `base_model` on one database with Accelerate (1 CPU process or N GPU processes).

    Args:
        base_model: the base; it is not modified.
        train_ds, eval_ds: `datasets.Dataset`s with `image` and `score` (and optionally `score_distribution`).
        config: hyperparameters and the run folder.
        database: registered database name; gives the score range and is recorded for the bank.
        score_range: `(low, high)` of the `score` column, mapped linearly onto the model's `score_range`
            (default: the database's range, else the model's).
        resume_from_checkpoint: a checkpoint folder, or `"latest"` / `True` for the newest one in
            `output_dir/checkpoints` (a fresh start when there is none).

    Returns:
        [`FinetuneResult`]. The main process also writes `output_dir/model` and `output_dir/finetune_result.json`.

    Dropout masks are drawn from torch's global generator, reseeded for every micro-batch from `config.seed` and the
    micro-batch's place in the run, so that a resumed run reproduces an uninterrupted one exactly.
    """
    spec = get_database_spec(database) if database is not None else None
    for dataset, what in ((train_ds, "train_ds"), (eval_ds, "eval_ds")):
        if dataset is not None:
            check_dataset(dataset, what)
    source_range = tuple(score_range or (spec.score_range if spec else base_model.config.score_range))
    if len(source_range) != 2 or not source_range[0] < source_range[1]:
        raise InputError(f"score_range must be (low, high) with low < high, received {score_range}")
    has_histograms = "score_distribution" in train_ds.column_names
    kind = ("emd" if has_histograms else "mse") if config.loss == "auto" else config.loss
    if kind == "emd" and not has_histograms:
        raise InputError("loss='emd' needs a 'score_distribution' column (vote histograms); use loss='mse' or 'auto'")

    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    main = accelerator.is_main_process
    output_dir = Path(config.output_dir)  # a Path already (FinetuneConfig); typed for its callers' str
    base_fingerprint = model_fingerprint(base_model)
    base_ref = (base_model.source or Reference()).with_fingerprint(base_fingerprint)
    model = copy.deepcopy(base_model).float()
    model.source = None
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable()

    def scored(dataset: Any) -> ScoredImages:
        bins = model.config.num_bins if kind == "emd" and "score_distribution" in dataset.column_names else None
        return ScoredImages(dataset, base_model.image_processor, source_range, model.config.score_range, bins)

    train_rows = scored(train_ds)
    examples = {"train": train_rows, "eval": scored(eval_ds) if eval_ds is not None else None}
    probe = train_rows[0]["pixel_values"][None]
    _freeze(model, config.freeze_prefix_blocks, probe)
    prefix = config.freeze_prefix_blocks
    cached = caches_prefix(config, model, probe, sum(len(d) for d in examples.values() if d is not None))
    sets: dict[str, TorchDataset | None] = dict(examples)
    if (
        cached and prefix is not None
    ):  # the frozen prefix gives each image the same output at every step: compute it once
        model.to(accelerator.device)
        sets = {
            name: None if rows is None else encode_prefix(model, rows, prefix, config, accelerator)
            for name, rows in examples.items()
        }

    def loader(dataset: TorchDataset | None, **kwargs: Any) -> DataLoader | None:
        if dataset is None:
            return None
        # Own generators keep data loading off the global RNG (dropout); cached rows need no loading workers.
        workers = 0 if cached else config.num_workers
        return DataLoader(
            dataset, batch_size=config.batch_size, num_workers=workers, generator=torch.Generator(), **kwargs
        )

    train_loader, eval_loader = loader(sets["train"], shuffle=True), loader(sets["eval"])
    optimizer = _optimizer(model, config)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(
        optimizer.optimizer, round(config.warmup_ratio * total_steps), total_steps
    )
    facts = {
        "base_fingerprint": base_fingerprint,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "num_processes": accelerator.num_processes,
        "num_images": len(train_ds),
        "total_steps": total_steps,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
    }
    global_step, history, num_eval = 0, [], 0
    metrics: dict[str, float] = {}
    loss_sum = torch.zeros(2, device=accelerator.device)  # (sum, count) of micro-batch losses since the last record
    run_checkpoints(output_dir)  # a symlinked checkpoint folder is refused now, not after the first steps
    loaded = load_checkpoint(checkpoint_candidates(resume_from_checkpoint, output_dir))
    if loaded is not None:
        checkpoint, state, tensors = loaded
        differing = {k: (state.get(k), facts[k]) for k in RESUME_KEYS if state.get(k) != facts[k]}
        if differing:
            raise InputError(
                f"checkpoint {checkpoint} comes from a run with other settings (checkpoint, now): {differing}"
            )
        accelerator.unwrap_model(model).load_state_dict(tensors[CHECKPOINT_MODEL_FILE])
        optimizer.load_state_dict(optimizer_state_dict(tensors[CHECKPOINT_OPTIMIZER_FILE], state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        del tensors
        global_step, history = int(state["global_step"]), list(state["history"])
        if main:  # the pending loss, already summed over processes
            loss_sum = torch.tensor(state["loss_sum"], device=accelerator.device)
            logger.info("Resumed from %s at step %d of %d", checkpoint, global_step, total_steps)
    if main:
        logger.info(
            "Fine-tuning on %d images (%s loss%s): %d steps of %d images x %d accumulation x %d process(es)",
            len(train_ds),
            kind,
            f", the output of the {prefix} frozen blocks computed once" if cached else "",
            total_steps,
            config.batch_size,
            config.gradient_accumulation_steps,
            accelerator.num_processes,
        )

    def record() -> None:
        nonlocal metrics, num_eval, loss_sum
        totals = accelerator.reduce(loss_sum, reduction="sum")
        entry = {
            "epoch": round(global_step / steps_per_epoch, 4),
            "step": global_step,
            "train_loss": float(totals[0] / totals[1].clamp_min(1)),
        }
        loss_sum = torch.zeros_like(loss_sum)
        if eval_loader is not None:
            metrics, num_eval = _evaluate(accelerator, model, eval_loader, prefix)
            _train_mode(core, prefix)
            entry.update(metrics)
        history.append(entry)
        if main:
            logger.info("step %d: %s", global_step, ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))

    core = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Only the main process shows progress; there, TQDM_* environment settings apply.
    quiet = {} if accelerator.is_local_main_process else {"disable": True}
    progress = tqdm(total=total_steps, initial=global_step, desc="Fine-tuning", unit="step", **quiet)
    _train_mode(core, prefix)
    start_epoch, skip = divmod(global_step, steps_per_epoch)
    for epoch in range(start_epoch, math.ceil(total_steps / steps_per_epoch)):
        if global_step == total_steps:  # resumed from the final checkpoint
            break
        train_loader.set_epoch(epoch)
        skipped = skip * config.gradient_accumulation_steps if epoch == start_epoch else 0
        batches = accelerator.skip_first_batches(train_loader, skipped) if skipped else train_loader
        for index, batch in enumerate(batches, start=skipped):
            with accelerator.accumulate(model):
                seed = _dropout_seed(config.seed, epoch, index, accelerator.process_index, accelerator.num_processes)
                torch.manual_seed(seed)
                loss = _loss(core, model(**_inputs(batch, prefix)), batch, kind, config.rank_loss_weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            loss_sum += torch.stack([loss.detach().float(), torch.ones((), device=loss.device)])
            if not accelerator.sync_gradients:
                continue
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            global_step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
            if global_step == total_steps or (global_step % steps_per_epoch == 0 and config.eval_every_epoch):
                record()
            if config.checkpoint_every and (global_step % config.checkpoint_every == 0 or global_step == total_steps):
                state = {
                    "global_step": global_step,
                    "history": history,
                    **facts,
                    "loss_sum": accelerator.reduce(loss_sum, reduction="sum").tolist(),
                }
                save_checkpoint(accelerator, output_dir, state, config.keep_checkpoints, model, optimizer, scheduler)
            if global_step == total_steps:
                break
    progress.close()
    if not history or history[-1]["step"] != global_step:
        record()
    elif eval_loader is not None and num_eval == 0:  # resumed from the final checkpoint
        metrics, num_eval = _evaluate(accelerator, model, eval_loader, prefix)

    accelerator.wait_for_everyone()
    tuned = accelerator.unwrap_model(model)
    if config.gradient_checkpointing:
        tuned.activation_checkpointing_disable()
    if main:
        save_model_dir(tuned, output_dir / MODEL_DIR)
        write_json(
            output_dir / RESULT_FILE,
            {
                "database": asdict(spec) if spec else None,
                "num_images": len(train_ds),
                "num_eval_images": num_eval,
                "prefix_cached": cached,
                "metrics": metrics,
                "loss": kind,
                "score_range": list(source_range),
                "history": history,
                "config": config.to_dict(),
                "base": base_ref.to_dict(),
                "steps": global_step,
                "num_processes": accelerator.num_processes,
                "mixed_precision": accelerator.mixed_precision,
            },
        )
        logger.info("Saved the fine-tuned model to %s", output_dir / MODEL_DIR)
    accelerator.wait_for_everyone()
    return FinetuneResult(tuned, metrics, history, len(train_ds), num_eval, output_dir)


def load_model_dir(model: AestheticModel | str | Path, what: str) -> AestheticModel:
    if isinstance(model, AestheticModel):
        return model
    if not (Path(model) / CONFIG_FILE).is_file():
        raise MissingFileError(f"expected {what} (a folder with config.json from save_pretrained) at {model}")
    with transformers_bars_off():  # a load on the user's behalf
        return AestheticModel.from_pretrained(model)


def finetune_database(
    database: str,
    root: str | Path,
    base: AestheticModel | str | Path,
    config: FinetuneConfig,
    *,
    split: str = "train",
    eval_split: str | None = "validation",
    split_seed: int = 0,
    skip_invalid: bool = False,
    resume_from_checkpoint: str | Path | bool | None = None,
) -> FinetuneResult:
    """Load a registered database from its official files (at image level) and the base model, then `finetune`.

    Args:
        database: registered name (e.g. `"koniq10k"`); personalised databases are used at image level.
        root: the database folder as distributed.
        base: an `AestheticModel` or its folder.
        split, eval_split: splits to train and evaluate on (`eval_split=None`: no evaluation).
        split_seed: seed of the seeded splits of databases without an official one.
        skip_invalid: skip malformed rows and missing images instead of failing.
    """
    base_model = load_model_dir(base, "a base model")
    train_ds, eval_ds = (
        load_database(database, root, split=s, level="image", seed=split_seed, skip_invalid=skip_invalid)
        if s
        else None
        for s in (split, eval_split)
    )
    return finetune(
        base_model, train_ds, eval_ds, config, database=database, resume_from_checkpoint=resume_from_checkpoint
    )
