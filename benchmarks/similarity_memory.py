"""Peak memory of `TaskVectorBank.similarity` on the paper's bank size, next to the bank's other operations.

Writes a synthetic bank with the shapes of CLIP ViT-L/14's vision tower plus the paper's head (303 M parameters)
and six tasks (a shared direction plus each task's own seeded noise, so the similarities are not all zero), stored
in bfloat16 (3.6 GB; `--storage-dtype float32` for 7.3 GB). Then, each in a fresh process, measures the peak
resident memory (VmHWM) and seconds of:

- `open`: loading the bank's config, reading no task file (the interpreter, torch and transformers: the baseline);
- `read`: the bank's streamed read (`iter_stacked`, one parameter's six slices at a time: how merging reads it);
- `similarity-task` and `similarity-layer`: `bank.similarity(...)` over all parameters, and also per layer group;
- `stacked`: the resident `[T, ...]` copy that personalization holds (`bank.stacked()`).

    python benchmarks/similarity_memory.py [--storage-dtype bfloat16] [--smoke]

Prints a JSON line and a table. Everything is written under a temporary folder deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

GB = 1024**3
TASKS = 6
#: CLIP ViT-L/14's vision tower.
VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
               image_size=224)  # fmt: skip
SMOKE = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
             image_size=32)  # fmt: skip

_PRELUDE = """
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from transformers import CLIPVisionConfig
from taskvec_aesthetics import AestheticConfig, AestheticModel, TaskVectorBank
args = json.loads(sys.argv[1])
torch.set_num_threads(1)

def meta_model():
    with torch.device("meta"):  # shapes and layer groups without allocating the weights
        return AestheticModel(AestheticConfig(encoder_config=CLIPVisionConfig(**args["encoder"])))

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

_WRITE = """
from collections.abc import Mapping
from taskvec_aesthetics.task_vectors.bank_files import TaskInfo
from taskvec_aesthetics.task_vectors.task_vector import TaskVector
shapes = {n: list(p.shape) for n, p in meta_model().named_parameters()}

class Synthetic(Mapping):
    # A task vector made on demand: 1e-3 x (0.5 x a shared direction + this task's own noise), per tensor.
    def __init__(self, task):
        self.task = task
    def __getitem__(self, name):
        index = list(shapes).index(name)
        shared = torch.randn(shapes[name], generator=torch.Generator().manual_seed(index))
        own = torch.randn(shapes[name], generator=torch.Generator().manual_seed(1000 * (self.task + 1) + index))
        return 1e-3 * (0.5 * shared + own)
    def __iter__(self):
        return iter(shapes)
    def __len__(self):
        return len(shapes)

tasks = [TaskInfo(f"task{t}") for t in range(args["tasks"])]
vectors = {f"task{t}": TaskVector.lazy(Synthetic(t)) for t in range(args["tasks"])}
bank = TaskVectorBank({"fingerprint": "synthetic"}, shapes, tasks, vectors, storage_dtype=args["dtype"])
bank.save_pretrained(args["folder"])
print(json.dumps({"parameters": sum(torch.Size(s).numel() for s in shapes.values())}))
"""

_MEASURE = """
bank = TaskVectorBank.from_pretrained(args["folder"])
began, facts = time.perf_counter(), {}
if args["stage"] == "open":
    pass
elif args["stage"] == "read":
    for name, values in bank.iter_stacked():
        pass
elif args["stage"] == "stacked":
    bank.stacked()
else:
    granularity = args["stage"].split("-")[1]
    groups = meta_model().parameter_groups() if granularity == "layer" else None
    similarity = bank.similarity(granularity, groups=groups, progress=False)
    facts["cosine_0_1"] = float(similarity.matrix()[0, 1])  # 0.25 / 1.25 = 0.2 by construction
print(json.dumps({"stage": args["stage"], "peak_bytes": peak(), "seconds": time.perf_counter() - began, **facts}))
"""

STAGES = ("open", "read", "similarity-task", "similarity-layer", "stacked")


def _run(script: str, args: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PRELUDE + script), json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage-dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--smoke", action="store_true", help="a tiny encoder: checks the script itself")
    args = parser.parse_args()
    encoder = SMOKE if args.smoke else VIT_L14
    with tempfile.TemporaryDirectory(prefix="similarity-memory-") as scratch:
        folder = Path(scratch) / "bank"
        common = {"folder": str(folder), "encoder": encoder, "tasks": TASKS, "dtype": args.storage_dtype}
        began = time.perf_counter()
        written = _run(_WRITE, common)
        bank_bytes = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
        rows = [_run(_MEASURE, {**common, "stage": stage}) for stage in STAGES]
    read = next(r for r in rows if r["stage"] == "read")["peak_bytes"]
    print(
        json.dumps(
            {
                "parameters": written["parameters"],
                "tasks": TASKS,
                "storage_dtype": args.storage_dtype,
                "bank_bytes": bank_bytes,
                "rows": rows,
                "total_s": time.perf_counter() - began,
            }
        )
    )
    size = f"{written['parameters'] / 1e6:.0f} M parameters x {TASKS} tasks, {args.storage_dtype}"
    print(f"\n{size}: {bank_bytes / GB:.2f} GB of task files\n")
    baseline = rows[0]["peak_bytes"]
    print("| operation | peak memory (GB) | above `open` (GB) | vs the streamed read | seconds |")
    print("|---|---|---|---|---|")
    for row in rows:
        above, ratio = (row["peak_bytes"] - baseline) / GB, row["peak_bytes"] / read
        print(f"| {row['stage']} | {row['peak_bytes'] / GB:.2f} | {above:.3f} | {ratio:.2f}x | {row['seconds']:.1f} |")


if __name__ == "__main__":
    main()
