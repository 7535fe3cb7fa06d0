"""The paper's setting on one machine: memory and time with a CLIP ViT-L/14 base and six full task vectors.

Builds a random-weight CLIP ViT-L/14 base (the real sizes: hidden 1024, 24 layers, 16 heads, patch 14, 224 px; time
and memory do not depend on the weights) as an `AestheticModel`, six "fine-tuning runs" (the base plus seeded noise
on every parameter), and measures, each in its own process (peak resident memory, VmHWM):

- `build-bank` of the six runs (target: at most 3x the base's file size);
- loading a coefficients-only export and scoring 8 images (target: at most 2.5x the base's file size);
- the `Personalizer` with the paper preset: construction and optimisation steps (target: at most base + bank + 4 GB),
  and the seconds per step (the other rows give the seconds of the whole step).

`--old-src` measures another version of the library (e.g. the `src` folder of an earlier checkout) the same way, for
a before/after table; a process of that version that passes `--old-cap-gb` is stopped and reported as above the cap.

    python benchmarks/paper_scale.py --batch-size 32 --old-src ../old/src

Prints a JSON line and a table. `paper_scale_rows(...)` returns the rows, for a larger performance script.
Everything is written under a temporary folder that is deleted at the end (about 16 GB of disk while it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

GB = 1024**3
TASKS = 6
#: CLIP ViT-L/14's vision tower.
VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
               image_size=224)  # fmt: skip
#: A tiny encoder for a quick check of the script itself (`--smoke`).
SMOKE = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, patch_size=8, image_size=32
)
SRC = Path(__file__).resolve().parent.parent / "src"
STAGES = ("build-bank", "load", "personalize")

# Each measured step is a small program run in a fresh interpreter; it prints one JSON line, including its VmHWM.
_PRELUDE = """
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import torch
args = json.loads(sys.argv[1])
root = args["root"]

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

def done(**facts):
    print("RESULT " + json.dumps({"peak_bytes": peak(), **facts}), flush=True)
"""

_SETUP = """
from PIL import Image
import numpy as np
from transformers import CLIPVisionConfig
from taskvec_aesthetics import AestheticConfig, AestheticModel, model_fingerprint
torch.manual_seed(0)
encoder = CLIPVisionConfig(**args["encoder"])
model = AestheticModel(AestheticConfig(encoder_config=encoder)).eval()
model.save_pretrained(f"{root}/base")
fingerprint = model_fingerprint(model)
for task in range(args["tasks"]):
    generator = torch.Generator().manual_seed(task + 1)
    noise = {n: 1e-3 * torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(noise[n])
    model.save_pretrained(f"{root}/runs/task{task}/model")
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.sub_(noise[n])
    del noise
    result = {"base": {"fingerprint": fingerprint}, "database": {"name": f"task{task}"}, "metrics": {"srocc": 0.5},
              "num_images": 1000, "score_range": [1.0, 10.0]}
    with open(f"{root}/runs/task{task}/finetune_result.json", "w") as handle:
        json.dump(result, handle)
rng = np.random.default_rng(0)
os.makedirs(f"{root}/images", exist_ok=True)
for i in range(args["images"]):
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(f"{root}/images/{i:03d}.png")
done()
"""

_BUILD_BANK = """
from taskvec_aesthetics.training.bank_building import build_bank
began = time.perf_counter()
runs = [f"{root}/runs/task{t}" for t in range(args["tasks"])]
build_bank(runs, f"{root}/base", save_directory=args["output"])
done(seconds=time.perf_counter() - began)
"""

_EXPORT = """
from taskvec_aesthetics import AestheticModel, TaskVectorBank
base = AestheticModel.from_pretrained(f"{root}/base")
bank = TaskVectorBank.from_pretrained(args["bank"])
weights = {name: 0.1 * (i + 1) for i, name in enumerate(bank.task_names)}
began = time.perf_counter()
personalized = base.with_coefficients(bank, weights)
seconds = time.perf_counter() - began
personalized.save_pretrained(f"{root}/export", export="coefficients")
done(seconds=seconds)
"""

_LOAD_AND_SCORE = """
from taskvec_aesthetics import AestheticModel
images = sorted(os.listdir(f"{root}/images"))[:8]
began = time.perf_counter()
model = AestheticModel.from_pretrained(f"{root}/export")
scores = model.score([f"{root}/images/{name}" for name in images], batch_size=8)
done(seconds=time.perf_counter() - began, scores=len(scores))
"""

_PERSONALIZE = """
import dataclasses
from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.personalization.personalizer import Personalizer, PersonalizerConfig
base = AestheticModel.from_pretrained(f"{root}/base")
bank = TaskVectorBank.from_pretrained(args["bank"], base=base)
fields = {f.name for f in dataclasses.fields(PersonalizerConfig)}
settings = {k: v for k, v in args["settings"].items() if k in fields}  # an older version lacks some
config = PersonalizerConfig.from_preset("paper", steps=args["steps"], batch_size=args["batch_size"], **settings)
cuda = torch.device(settings.get("device", "cpu")).type == "cuda"
began = time.perf_counter()
personalizer = Personalizer(base, bank, config)
constructed = time.perf_counter() - began
images = sorted(os.listdir(f"{root}/images"))[: args["batch_size"]]
encoded = personalizer.encode_ratings([(f"{root}/images/{n}", float(i % 5)) for i, n in enumerate(images)])
layout = personalizer.layout_of(config.granularity)
start = torch.full((layout.num_groups, len(bank)), 1.0 / len(bank))
if cuda:  # the first step pays for CUDA's start-up and kernel selection: not timed
    personalizer._optimise(start, encoded, 1)
    torch.cuda.synchronize()
began = time.perf_counter()
personalizer._optimise(start, encoded, args["steps"])
if cuda:
    torch.cuda.synchronize()
step = (time.perf_counter() - began) / args["steps"]
done(seconds=step, construction_seconds=constructed, gradient=personalizer.gradient,
     micro_batch=personalizer.micro_batch_size(len(encoded)) if hasattr(personalizer, "micro_batch_size") else None,
     gpu_peak_bytes=torch.cuda.max_memory_allocated() if cuda else None)
"""


def _run(program: str, args: dict[str, Any], src: Path, cap_bytes: int | None) -> dict[str, Any]:
    """Run one measured program with ``src`` importable; stop it when its resident memory passes ``cap_bytes``."""
    path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env["TQDM_DISABLE"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_PRELUDE) + textwrap.dedent(program), json.dumps(args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, stopped, began = 0, False, time.perf_counter()
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            seen = max(seen, rss)
        except (OSError, StopIteration):
            pass
        if cap_bytes is not None and seen > cap_bytes:
            process.kill()
            stopped = True
            break
        time.sleep(0.05)
    out, err = process.communicate()
    wall = time.perf_counter() - began
    if stopped:
        return {"stopped_above_bytes": cap_bytes, "peak_bytes": None, "wall_seconds": wall}
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"a measured step failed (exit {process.returncode}):\n{err[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT ") :]), "wall_seconds": wall}


def _size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def paper_scale_rows(
    batch_size: int = 32,
    micro_batch_size: int | None = 4,
    steps: int = 1,
    gradient_checkpointing: bool = True,
    old_src: str | Path | None = None,
    old_cap_gb: float = 13.0,
    tasks: int = TASKS,
    root: str | Path | None = None,
    encoder: dict[str, int] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    variants: list[tuple[int | None, bool, str]] | None = None,
    stages: tuple[str, ...] = STAGES,
) -> list[dict[str, Any]]:
    """Measure the paper's setting; one row per (measure, version). Deletes its files when done.

    ``variants`` are (micro-batch, gradient checkpointing, dtype) rows of the `Personalizer` (default: the one given by
    ``micro_batch_size``, ``gradient_checkpointing`` and ``dtype``); the other version is measured once, in ``dtype``. ``stages``
    chooses the rows (the bank is always built: the other stages read it)."""
    folder = Path(root or tempfile.mkdtemp(prefix="paper-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    versions = [("new", SRC)] + ([("old", Path(old_src).resolve())] if old_src else [])
    cap = int(old_cap_gb * GB)
    rows: list[dict[str, Any]] = []
    try:
        base_args = {"root": str(folder), "tasks": tasks, "images": max(8, batch_size), "encoder": encoder or VIT_L14}
        _run(_SETUP, base_args, SRC, None)
        base_bytes = _size(folder / "base" / "model.safetensors")

        def row(measure: str, version: str, result: dict[str, Any], target: float | None, **extra: Any) -> None:
            peak = result.get("peak_bytes")
            rows.append(
                {
                    "measure": measure,
                    "version": version,
                    "peak_rss_gb": None if peak is None else round(peak / GB, 2),
                    "above_gb": None
                    if "stopped_above_bytes" not in result
                    else round(result["stopped_above_bytes"] / GB, 1),
                    "peak_over_base": None if peak is None else round(peak / base_bytes, 2),
                    "target_gb": None if target is None else round(target / GB, 2),
                    "within_target": None if peak is None or target is None else peak <= target,
                    "seconds": None if result.get("seconds") is None else round(result["seconds"], 3),
                    "failed": result.get("failed"),
                    **extra,
                }
            )

        for version, src in versions if "build-bank" in stages else versions[:1]:
            output = folder / f"bank-{version}"
            result = _run(_BUILD_BANK, {**base_args, "output": str(output)}, src, cap if version == "old" else None)
            if "build-bank" in stages:
                row(f"build-bank of {tasks} runs", version, result, 3 * base_bytes)
            if version == "old":
                shutil.rmtree(output, ignore_errors=True)
        bank = folder / "bank-new"
        bank_bytes = _size(bank / "task_vectors")
        if "load" in stages:
            _run(_EXPORT, {**base_args, "bank": str(bank)}, SRC, None)
            for version, src in versions:
                result = _run(_LOAD_AND_SCORE, base_args, src, cap if version == "old" else None)
                row("load a coefficients export, score 8 images", version, result, 2.5 * base_bytes)
        runs = [("new", SRC, *variant) for variant in variants or [(micro_batch_size, gradient_checkpointing, dtype)]]
        runs += [("old", src, None, False, dtype) for _, src in versions[1:]]
        for version, src, micro, checkpointed, precision in runs if "personalize" in stages else []:
            settings = {"device": device, "dtype": precision, "micro_batch_size": micro,
                        "gradient_checkpointing": checkpointed}  # fmt: skip
            args = {**base_args, "bank": str(bank), "steps": steps, "batch_size": batch_size, "settings": settings}
            try:
                result = _run(_PERSONALIZE, args, src, cap if version == "old" and device == "cpu" else None)
            except RuntimeError as error:
                if version == "new":
                    raise
                result = {"failed": str(error).strip().splitlines()[-1]}  # e.g. a version without this device
            gpu_peak = result.get("gpu_peak_bytes")
            row(
                f"Personalizer, paper preset, batch {batch_size}, {precision} on {device}",
                version,
                result,
                base_bytes + bank_bytes + 4 * GB,
                micro_batch=result.get("micro_batch"),
                gradient_checkpointing=checkpointed if version == "new" else None,
                gradient=result.get("gradient"),
                gpu_peak_gb=None if gpu_peak is None else round(gpu_peak / GB, 2),
                gpu_within_target=None if gpu_peak is None else gpu_peak <= base_bytes + bank_bytes + 4 * GB,
                construction_seconds=None
                if result.get("construction_seconds") is None
                else round(result["construction_seconds"], 1),
            )
        for r in rows:
            r.update(base_gb=round(base_bytes / GB, 2), bank_gb=round(bank_bytes / GB, 2), tasks=tasks)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| measure | version | micro-batch | peak RSS (GB) | x base | GPU peak (GB) | target (GB) | within | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("failed"):
            peak = f"failed: {r['failed']}"
        elif r["peak_rss_gb"] is not None:
            peak = f"{r['peak_rss_gb']:.2f}"
        else:
            peak = f"> {r['above_gb']} (stopped)"
        ratio = f"{r['peak_over_base']:.2f}" if r["peak_over_base"] is not None else "-"
        gpu = r.get("gpu_peak_gb")
        within = r["within_target"] if gpu is None else r["gpu_within_target"]
        within = {True: "yes", False: "no", None: "no"}[within]
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.2f}"
        micro = r.get("micro_batch") or "-"
        if r.get("gradient_checkpointing"):
            micro = f"{micro}, checkpointed"
        gpu = "-" if gpu is None else f"{gpu:.2f}"
        lines.append(
            f"| {r['measure']} | {r['version']} | {micro} | {peak} | {ratio} | {gpu} | {r['target_gb']} | {within} "
            f"| {seconds} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32, help="rated images per step (paper: 32)")
    parser.add_argument("--micro-batch-size", type=int, default=4, help="images per micro-batch (default: 4)")
    parser.add_argument("--steps", type=int, default=1, help="optimisation steps timed (default: 1)")
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="keep every block's activations")
    parser.add_argument("--old-src", help="the src folder of another version, measured the same way")
    parser.add_argument("--old-cap-gb", type=float, default=13.0, help="stop the other version above this RSS")
    parser.add_argument("--tasks", type=int, default=TASKS, help="task vectors in the bank (default: 6)")
    parser.add_argument("--root", help="working folder (default: a new temporary folder); deleted at the end")
    parser.add_argument("--smoke", action="store_true", help="a tiny encoder instead of ViT-L/14 (checks the script)")
    parser.add_argument("--device", default="cpu", help="where the Personalizer runs: cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", help="the Personalizer's precision (default: float32)")
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="MICRO[+ckpt][:DTYPE]",
        help="several Personalizer rows, e.g. `32 4+ckpt 32:bfloat16`: a micro-batch each, +ckpt for gradient "
        "checkpointing, :DTYPE for another precision than --dtype (default: one row, --micro-batch-size, checkpointed "
        "unless --no-gradient-checkpointing)",
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="rows to measure")
    args = parser.parse_args()
    variants = None
    if args.variants:
        variants = []
        for variant in args.variants:
            sizes, _, precision = variant.partition(":")
            variants.append((int(sizes.split("+")[0]), sizes.endswith("+ckpt"), precision or args.dtype))
    rows = paper_scale_rows(
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        steps=args.steps,
        gradient_checkpointing=not args.no_gradient_checkpointing,
        old_src=args.old_src,
        old_cap_gb=args.old_cap_gb,
        tasks=args.tasks,
        root=args.root,
        encoder=SMOKE if args.smoke else None,
        device=args.device,
        dtype=args.dtype,
        variants=variants,
        stages=tuple(args.stages),
    )
    print(json.dumps({"benchmark": "paper_scale", "rows": rows}))
    print(table(rows))


if __name__ == "__main__":
    main()
