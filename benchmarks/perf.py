"""Performance against the limits: every figure is a ratio against a reference measured in the same run.

    python benchmarks/perf.py            # the whole table, under 10 minutes on 2 CPU cores
    python benchmarks/perf.py --quick    # smaller sizes, to check that it runs

Rows:
- `step_ratio_autograd`, `step_ratio_streamed`: one personalization step (merge + forward + backward + AdamW on the
  coefficients) over one plain fine-tuning step (forward + backward + AdamW on every parameter) of the same model on
  the same batch. A ViT-S/16-sized CLIP vision encoder (hidden 384, 12 layers, 6 heads, patch 16, 224 px, random
  weights), T = 6 task vectors over every parameter, batch 8. Limit: 1.2.
- `memory_per_task`: during a fit with the bank loaded from disk, the peak resident memory added by each task beyond
  the second, in copies of one task vector (peak RSS of fresh processes with T = 2 and T = 6). Limit: 1.
- `score_over_forward`: images per second of `AestheticModel.score` over those of a bare encoder forward.
- `users_per_minute_*`: users personalized per minute by `personalize_many` on the demo bank: one by one
  (`batch_users=1`), batched, and two processes under `accelerate launch`; the ratios are over one by one.
- With `--paper-scale BATCH MICRO_BATCH`, the paper-scale dry run of `benchmarks/paper_scale.py` (off by default:
  minutes per step on a CPU).

Prints one JSON line, then the table. Timings on a shared machine are only comparable within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from transformers import CLIPVisionConfig  # noqa: E402

from taskvec_aesthetics import AestheticConfig, AestheticModel, TaskVectorBank  # noqa: E402
from taskvec_aesthetics.losses import pairwise_rank_loss  # noqa: E402
from taskvec_aesthetics.personalization.config import PersonalizerConfig  # noqa: E402
from taskvec_aesthetics.personalization.inputs import EncodedRatings  # noqa: E402
from taskvec_aesthetics.personalization.personalizer import Personalizer  # noqa: E402
from taskvec_aesthetics.task_vectors.task_vector import TaskVector  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def vit_s16(image_size: int = 224, layers: int = 12) -> AestheticModel:
    """A random-weight CLIP vision encoder of ViT-S/16 size with the paper's head."""
    torch.manual_seed(0)
    encoder = CLIPVisionConfig(
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=6,
        image_size=image_size,
        patch_size=16,
    )
    return AestheticModel(AestheticConfig(encoder_config=encoder)).eval()


def random_bank(model: AestheticModel, tasks: int) -> TaskVectorBank:
    """T task vectors over every parameter: seeded noise standing in for fine-tuned deltas."""
    generator = torch.Generator().manual_seed(1)
    vectors = {
        f"task{t}": TaskVector(
            {n: 0.01 * torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}
        )
        for t in range(tasks)
    }
    return TaskVectorBank.from_finetuned(model, vectors)


def seconds_per_call(function, repeats: int) -> float:
    function()  # warm-up
    began = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - began) / repeats


# -- step ratios -----------------------------------------------------------------------------------------------------
def step_ratios(model: AestheticModel, bank: TaskVectorBank, batch: int, repeats: int) -> dict[str, float]:
    pixels = torch.randn(batch, 3, model.config.encoder_config.image_size, model.config.encoder_config.image_size)
    ratings = torch.linspace(1, 5, batch, dtype=torch.float64)
    tuned = __import__("copy").deepcopy(model)
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=1e-5)

    def finetune_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        pairwise_rank_loss(tuned(pixel_values=pixels).scores, ratings.float()).backward()
        optimizer.step()

    reference = seconds_per_call(finetune_step, repeats)
    out = {"finetune_step_s": reference}
    for gradient in ("autograd", "streamed"):
        personalizer = Personalizer(
            model, bank, PersonalizerConfig(selection="last", gradient=gradient, batch_size=batch)
        )
        encoded = EncodedRatings(personalizer.encode(pixels), ratings)
        start = torch.full((personalizer.layout.num_groups, len(bank)), 1.0 / len(bank))
        # _optimise(steps=n) = n personalization steps (minibatch, merge, forward, backward, AdamW on coefficients)
        seconds = seconds_per_call(lambda: personalizer._optimise(start, encoded, 1), repeats)
        out[f"personalization_step_{gradient}_s"] = seconds
        out[f"step_ratio_{gradient}"] = seconds / reference
    return out


# -- memory per task -------------------------------------------------------------------------------------------------
_MEMORY_SCRIPT = """
import json, sys, torch
from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.personalization.personalizer import EncodedRatings, Personalizer, PersonalizerConfig
base = AestheticModel.from_pretrained(sys.argv[1])
tasks = int(sys.argv[3])
bank = TaskVectorBank.from_pretrained(sys.argv[2], base=base, tasks=[f"task{t}" for t in range(tasks)])
personalizer = Personalizer(base, bank, PersonalizerConfig(selection="last", steps=1, batch_size=4))
size = base.config.encoder_config.image_size
pixels = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
personalizer.fit_encoded(EncodedRatings(personalizer.encode(pixels), torch.tensor([1.0, 2.0, 3.0, 4.0])))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec, VmHWM starts afresh.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_bytes": peak * 1024}))
"""


def memory_per_task(model: AestheticModel, bank: TaskVectorBank, folder: Path) -> dict[str, float]:
    model.save_pretrained(folder / "base")
    base = AestheticModel.from_pretrained(folder / "base")
    bank.save_pretrained(folder / "bank")
    peaks = {}
    for tasks in (2, 6):
        done = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(folder / "base"), str(folder / "bank"), str(tasks)],
            capture_output=True,
            text=True,
            env=_env(),
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        peaks[tasks] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_bytes"]
    vector_bytes = sum(p.numel() for p in base.parameters()) * 4
    return {
        "peak_rss_T2_mb": peaks[2] / 2**20,
        "peak_rss_T6_mb": peaks[6] / 2**20,
        "task_vector_mb": vector_bytes / 2**20,
        "memory_per_task": (peaks[6] - peaks[2]) / 4 / vector_bytes,
    }


# -- score throughput ------------------------------------------------------------------------------------------------
def score_over_forward(model: AestheticModel, images: int, repeats: int) -> dict[str, float]:
    size = model.config.encoder_config.image_size
    pixels = torch.randn(images, 3, size, size)

    def bare() -> None:
        with torch.no_grad():
            for i in range(0, images, 8):
                model.encoder(pixel_values=pixels[i : i + 8])

    reference = seconds_per_call(bare, repeats)
    scored = seconds_per_call(lambda: model.score(pixels, batch_size=8), repeats)
    return {"bare_forward_images_per_s": images / reference, "score_images_per_s": images / scored,
            "score_over_forward": reference / scored}  # fmt: skip


# -- users per minute ------------------------------------------------------------------------------------------------
def users_per_minute(users: int, shots: int, steps: int, folder: Path) -> dict[str, float]:
    import datasets

    from taskvec_aesthetics.demo.config import DemoConfig
    from taskvec_aesthetics.demo.runner import base_and_bank, default_cache_dir
    from taskvec_aesthetics.demo.world import build_world
    from taskvec_aesthetics.personalization.many import personalize_many

    config = DemoConfig.preset("quick")
    config = dataclasses.replace(
        config, world=dataclasses.replace(config.world, num_users=users, pool_size=max(48, shots + 20))
    )
    world = build_world(config.world)
    base, bank, _, cache = base_and_bank(config, world, default_cache_dir(), progress=False)
    table = datasets.concatenate_datasets([world.ratings[u.user_id].select(range(shots)) for u in world.users])
    table.to_parquet(str(folder / f"ratings{shots}.parquet"))
    personalizer = PersonalizerConfig(steps=steps, eval_every=max(1, steps // 4))
    # The features are cached once beforehand: the rows compare fitting, not the first encoding of the images.
    features = folder / f"features{shots}"
    personalize_many(base, bank, table.select(range(shots)), folder / "warm", personalizer, cache_dir=features,
                     progress=False)  # fmt: skip
    out = {}
    for label, batch in (("sequential", 1), ("batched", users)):
        began = time.perf_counter()
        result = personalize_many(base, bank, table, folder / f"{label}{shots}", personalizer, batch_users=batch,
                                  cache_dir=features, progress=False)  # fmt: skip
        assert not result.failed, result.failed
        out[f"users_per_minute_{label}_k{shots}"] = users / (time.perf_counter() - began) * 60
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", "0", "-m", "taskvec_aesthetics.cli", "-q", "personalize-many",
        "--ratings", str(folder / f"ratings{shots}.parquet"), "--model", str(cache / "base"), "--bank",
        str(cache / "bank"), "--output", str(folder / f"two{shots}"), "--steps", str(steps),
        "--batch-users", str(max(1, users // 2)), "--cache-dir", str(features),
    ]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, env={**_env(), "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    # Includes starting two Python processes and loading the model in each, as a real run does.
    out[f"users_per_minute_2proc_k{shots}"] = users / (time.perf_counter() - began) * 60
    sequential = out[f"users_per_minute_sequential_k{shots}"]
    out[f"batched_over_sequential_k{shots}"] = out[f"users_per_minute_batched_k{shots}"] / sequential
    out[f"2proc_over_sequential_k{shots}"] = out[f"users_per_minute_2proc_k{shots}"] / sequential
    return out


# -- paper scale -----------------------------------------------------------------------------------------------------
def paper_scale_rows(batch_size: int, micro_batch_size: int) -> dict[str, float]:
    """The paper-scale dry run of `benchmarks/paper_scale.py` (random-weight ViT-L/14 base, 6 task vectors over every
    parameter): peak memory over the base model's size and seconds, per stage. It writes ~8 GB of files to a temporary
    folder and takes minutes per step on a CPU, so it runs only with `--paper-scale`."""
    from paper_scale import paper_scale_rows as measure

    results = {}
    for row in measure(batch_size=batch_size, micro_batch_size=micro_batch_size):
        key = "paper_" + "_".join(row["measure"].split()[:2]).replace(",", "").lower()
        if row["peak_over_base"] is not None:
            results[f"{key}_peak_over_base"] = float(row["peak_over_base"])
        if row["seconds"] is not None:
            results[f"{key}_seconds"] = float(row["seconds"])
    return results


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TQDM_DISABLE="1")
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class _Progress(dict):
    """The results so far; each new row is also written to stderr as soon as it is measured."""

    def update(self, rows: dict[str, float]) -> None:  # type: ignore[override]
        super().update(rows)
        for key, value in rows.items():
            print(f"{key}: {value:.4g}", file=sys.stderr, flush=True)


LIMITS = {"step_ratio_autograd": 1.2, "step_ratio_streamed": 1.2, "memory_per_task": 1.0}


def table(results: dict[str, float]) -> str:
    lines = ["| measure | value | limit |", "|---|---|---|"]
    for key, value in results.items():
        limit = LIMITS.get(key)
        lines.append(f"| {key} | {value:.3g} | {'' if limit is None else f'<= {limit}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: checks that everything runs")
    parser.add_argument("--users", type=int, default=4, help="users per users-per-minute row (default: 4)")
    parser.add_argument("--steps", type=int, default=20, help="personalizer steps in the users rows (default: 20)")
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 100], help="k of the users rows")
    parser.add_argument(
        "--paper-scale",
        type=int,
        nargs=2,
        metavar=("BATCH", "MICRO_BATCH"),
        help="also run the paper-scale dry run (benchmarks/paper_scale.py) at this batch and micro-batch; minutes "
        "per step on a CPU, so it is off by default (e.g. --paper-scale 32 4 on a GPU machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    began = time.perf_counter()
    size, layers = (64, 2) if args.quick else (224, 12)
    model = vit_s16(size, layers)
    bank = random_bank(model, 6)
    results = _Progress()
    results.update(step_ratios(model, bank, batch=8, repeats=1 if args.quick else 2))
    with tempfile.TemporaryDirectory() as scratch:
        results.update(memory_per_task(model, bank, Path(scratch)))
    del bank
    results.update(score_over_forward(model, images=16, repeats=1 if args.quick else 2))
    del model
    for shots in args.shots:
        with tempfile.TemporaryDirectory() as scratch:
            results.update(users_per_minute(args.users, shots, 4 if args.quick else args.steps, Path(scratch)))
    if args.paper_scale:
        results.update(paper_scale_rows(*args.paper_scale))
    results["wall_s"] = time.perf_counter() - began
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))
    print(table(results))


if __name__ == "__main__":
    main()
