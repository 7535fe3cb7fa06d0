"""`taskvec-aesthetics demo`: the whole library end to end, offline, on a CPU, in minutes.

1. Build the simulated world (real photographs, seeded traits, databases and raters; see `world.py`).
2. Make the base model (ImageNet EfficientNet-Lite0 + the paper's head), fine-tune one model per simulated
   database with Accelerate (top blocks + head; the frozen prefix is shared), build the bank. Base and bank are
   cached under the user's cache folder, keyed by everything that determines them, so a second run skips this.
3. Run the few-shot PIAA protocol (`benchmark.py`) for every rater at each k: our default and the baselines.
4. Write the table (JSON, markdown) and the figure; export one personalized model in both modes and reload each in
   a fresh Python process to check its scores are identical.

The numbers are the same on every run and every machine with the same kind of CPU: everything random is seeded
(`DemoConfig.seed`), torch uses deterministic algorithms, and the thread counts are fixed rather than taken from the
machine (`BUILD_THREADS` for the world and the bank; one thread per protocol worker, and each draw seeded on its own,
so the number of workers changes only the speed). Float reductions split over another number of threads round
differently, which is enough to flip a close model selection and change the table. The bank's files themselves may
still differ in their last bits between processes (MKL picks kernels by memory alignment unless `MKL_CBWR` says
otherwise); the table's numbers did not, in the test that compares two runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import threadpoolctl
import torch

from ..constants import BANK_CONFIG_FILE, COEFFICIENTS, MERGED
from ..experiments.benchmark import run_benchmark
from ..experiments.config import BenchmarkConfig
from ..experiments.results import BenchmarkResult
from ..hub.references import Reference
from ..modeling import AestheticModel
from ..personalization.config import PersonalizerConfig
from ..task_vectors.bank import TaskVectorBank
from ..training.bank_building import LITE0_IMAGENET, build_bank, init_base
from ..training.config import FinetuneConfig
from ..training.fine_tuning import finetune
from ..utils.io import atomic_path, write_json
from ..utils.progress import transformers_bars_off
from .config import DEMO_METHODS, DemoConfig
from .world import SIMULATED_DATABASES, World, build_world

__all__ = [
    "BUILD_THREADS",
    "DEMO_METHODS",
    "DemoConfig",
    "DemoResult",
    "run_demo",
    "default_cache_dir",
    "fixed_compute",
]

logger = logging.getLogger(__name__)

#: Threads that build the world and fine-tune the bank, whatever the machine (see the module's docstring).
BUILD_THREADS = 2


@contextmanager
def fixed_compute(threads: int) -> Iterator[None]:
    """Deterministic torch algorithms, and ``threads`` threads for torch and for the BLAS / OpenMP pools of numpy and
    scipy; what was set before is restored afterwards."""
    before, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with threadpoolctl.threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic)


def default_cache_dir() -> Path:
    """`$TASKVEC_AESTHETICS_CACHE`, else `$XDG_CACHE_HOME/taskvec-aesthetics`, else `~/.cache/taskvec-aesthetics`."""
    if os.environ.get("TASKVEC_AESTHETICS_CACHE"):
        return Path(os.environ["TASKVEC_AESTHETICS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taskvec-aesthetics"


def caption(num_raters: int, noise_ceiling: float) -> str:
    """What the demo's table shows: the raters it averages over and the ceiling their rating noise sets."""
    return (
        f"Test SROCC of {num_raters} simulated raters, against each rater's noisy ratings of the images they did not "
        f"rate; the noise ceiling (their ratings against their true utility, mean over raters) is {noise_ceiling:.3f}."
    )


@dataclass
class DemoResult:
    benchmark: BenchmarkResult
    paths: dict[str, Path]
    timings: dict[str, float]
    export_check: dict[str, Any]
    noise_ceiling: float
    bank_from_cache: bool
    cache_folder: Path
    caption: str = ""

    def report(self) -> str:
        """What the demo measured and where everything was written, for the terminal."""
        check = self.export_check
        lines = [
            self.benchmark.to_markdown(),
            self.caption,
            "Timings: "
            + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in self.timings.items())
            + (" (bank from cache)" if self.bank_from_cache else ""),
            f"Exports of {check['user_id']} (k = {check['k']}), reloaded in a fresh process: "
            + ", ".join(
                f"{e} {check[e]['bytes'] / 1024:,.0f} KB, max |diff| {check[e]['max_abs_diff']:.1e}"
                for e in (COEFFICIENTS, MERGED)
            )
            + (" - identical" if check["identical"] else " - NOT IDENTICAL"),
            "",
            f"base model and bank: {self.cache_folder / 'base'}, {self.cache_folder / 'bank'}",
            *(f"{kind}: {path}" for kind, path in self.paths.items()),
            *(f"{e} export: {check[e]['folder']}" for e in (COEFFICIENTS, MERGED)),
        ]
        return "\n".join(lines)


def _split(dataset: datasets.Dataset, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    parts = dataset.train_test_split(test_size=0.15, seed=seed)
    return parts["train"], parts["test"]


def _build_bank(config: DemoConfig, world: World, folder: Path, final: Path, progress: bool) -> None:
    """Make the base model, fine-tune one model per database, build the bank; all inside ``folder``.

    ``folder`` is renamed to ``final`` once complete, so the bank records its base at ``final / "base"``.
    """
    base = init_base(
        LITE0_IMAGENET, seed=config.seed, image_size=config.world.image_size, save_directory=folder / "base"
    )
    runs = []
    for name, database in world.databases.items():
        train, evaluation = _split(database, config.seed)
        run_dir = folder / "runs" / name
        result = finetune(
            base,
            train,
            evaluation,
            FinetuneConfig(
                output_dir=run_dir,
                max_steps=config.finetune_steps,
                batch_size=config.finetune_batch_size,
                freeze_prefix_blocks=config.freeze_prefix_blocks,
                seed=config.seed,
                eval_every_epoch=False,
            ),
            score_range=SIMULATED_DATABASES[name].score_range,
        )
        logger.info("Fine-tuned %s: eval %s", name, result.metrics)
        runs.append(run_dir)
    base.source = Reference.local(final / "base")  # where it will be once the folder is renamed into place
    bank = build_bank(runs, base)
    for task in bank.tasks:
        spec = SIMULATED_DATABASES[task.name].metadata()
        task.database, task.kind, task.licence = spec["database"], spec["kind"], spec["licence"]
    bank.save_pretrained(folder / "bank")
    shutil.rmtree(folder / "runs")  # the bank holds what the runs produced


def base_and_bank(config: DemoConfig, world: World, cache_dir: Path, progress: bool):
    """Load the cached base and bank, or build them (into a temporary folder renamed into place when complete)."""
    target = cache_dir / "demo" / config.bank_key()
    cached = (target / "bank" / BANK_CONFIG_FILE).is_file()
    if not cached:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            _build_bank(config, world, scratch, target, progress)
            if target.exists():
                shutil.rmtree(target)
            os.replace(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    with transformers_bars_off():  # the demo's own loads show no transformers bars
        base = AestheticModel.from_pretrained(target / "base").eval()
    return base, TaskVectorBank.from_pretrained(target / "bank", base=base), cached, target


# Arguments: the number of images, the images, then model folders; prints one JSON line of scores per folder.
_RELOAD_SCRIPT = """
import json, sys
from taskvec_aesthetics import AestheticModel
count = int(sys.argv[1])
images, folders = sys.argv[2 : 2 + count], sys.argv[2 + count :]
for folder in folders:
    print(json.dumps(AestheticModel.from_pretrained(folder).score(images).tolist()))
"""


def _check_exports(base: AestheticModel, bank: TaskVectorBank, world: World, result: BenchmarkResult, out: Path):
    """Export the protocol's fit of the first rater at the largest k (the figure's) both ways, reload each in a fresh
    process, compare scores. It is the one-pass fit (where the output ensemble won, the same recipe kept one pass):
    an output ensemble has no merged weights."""
    user, coefficients = result.example_user, result.example_coefficients
    if user is None or coefficients is None:
        raise RuntimeError(
            "the protocol fitted no rater at the largest k, so there is no personalized model to export"
        )
    model = base.with_coefficients(bank, coefficients, info=result.example_info)
    images_dir = out / "exports" / "check_images"
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(8):
        path = images_dir / f"pool_{i}.png"
        world.pool.image(i).save(path)
        paths.append(str(path))
    expected = model.score(paths)
    check: dict[str, Any] = {"user_id": user, "k": max(result.config["shots"])}
    folders = {export: out / "exports" / f"{user}-{export}" for export in (COEFFICIENTS, MERGED)}
    for export, folder in folders.items():
        with transformers_bars_off():
            model.save_pretrained(folder, export=export)
    done = subprocess.run(  # one fresh process reloads both exports
        [sys.executable, "-c", _RELOAD_SCRIPT, str(len(paths)), *paths, *map(str, folders.values())],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reloading the exports in a fresh process failed:\n{done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()[-len(folders) :]
    for (export, folder), line in zip(folders.items(), lines):
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        check[export] = {
            "folder": str(folder),
            "bytes": size,
            "max_abs_diff": max(abs(a - b) for a, b in zip(json.loads(line), expected.tolist())),
        }
    check["identical"] = all(check[e]["max_abs_diff"] <= 1e-5 for e in (COEFFICIENTS, MERGED))
    return check


def _write_sample_ratings(world: World, out: Path, count: int = 30) -> Path:
    """The second rater's first ratings as an image folder (`metadata.csv` + PNGs) to try `personalize` on."""
    user = world.users[min(1, len(world.users) - 1)].user_id
    folder = out / "ratings" / user
    folder.mkdir(parents=True, exist_ok=True)
    ratings = world.ratings[user]
    rows = ["file_name,score"]
    for i in range(min(count, len(ratings))):
        name = f"{ratings[i]['image_id']}.png"
        world.pool.image(i).save(folder / name)  # ratings list the pool in pool order
        rows.append(f"{name},{ratings[i]['score']}")
    with atomic_path(folder / "metadata.csv") as tmp:
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def run_demo(
    config: DemoConfig | None = None,
    output_dir: str | Path = "demo_output",
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo and write its table, figure and exports into ``output_dir``."""
    config = config or DemoConfig()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    began = time.perf_counter()
    with fixed_compute(BUILD_THREADS):
        world = build_world(config.world)
        timings["world_s"] = time.perf_counter() - began
        mark = time.perf_counter()
        base, bank, from_cache, cache_folder = base_and_bank(
            config, world, Path(cache_dir) if cache_dir else default_cache_dir(), progress
        )
        timings["bank_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    ratings = datasets.concatenate_datasets([world.ratings[u.user_id] for u in world.users])
    personalizer = PersonalizerConfig(steps=config.personalizer_steps, seed=config.seed)
    workers = config.workers or min(4, os.cpu_count() or 1)
    with fixed_compute(workers):  # the protocol gives each worker an equal share: one thread
        result = run_benchmark(
            base,
            bank,
            ratings,
            BenchmarkConfig(
                shots=config.shots,
                repeats=config.repeats,
                methods=config.methods,
                seed=config.seed,
                personalizer=personalizer,
                paper=PersonalizerConfig.from_preset("paper", steps=config.paper_steps, seed=config.seed),
                baseline_steps=config.baseline_steps,
                score_candidates=config.score_candidates,
                workers=workers,
                progress=progress,
            ),
        )
    timings["benchmark_s"] = time.perf_counter() - mark
    ceiling = sum(world.noise_ceiling(u.user_id) for u in world.users) / len(world.users)
    text = caption(len(world.users), ceiling)
    paths = result.save(out, noise_ceiling=ceiling, caption=text)
    mark = time.perf_counter()
    check = _check_exports(base, bank, world, result, out)
    timings["exports_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - began
    write_json(
        out / "demo.json",
        {
            "config": dataclasses.asdict(config),
            "timings": timings,
            "noise_ceiling": ceiling,
            "bank_from_cache": from_cache,
            "export_check": check,
            "users": {u.user_id: u.describe() for u in world.users},
            "bank": bank.to_config()["tasks"],
        },
    )
    paths["demo"] = out / "demo.json"
    paths["sample ratings"] = _write_sample_ratings(world, out)
    return DemoResult(result, paths, timings, check, ceiling, from_cache, cache_folder, text)
