"""What scoring as an output ensemble costs against one merged model, on the demo's bank.

The demo's bank covers the last encoder block, the neck and the head of EfficientNet-Lite0 (15 frozen blocks of 16)
with 7 task models. A merged model runs 16 blocks per image; the output ensemble runs the frozen 15 once and the
covered block 7 times (`output_ensemble.scoring_cost`). This measures the wall time of both on the same batches, in
turns, and writes benchmarks/results/ensemble_cost.{json,md}.

    python benchmarks/ensemble_cost.py [--batch 32] [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from taskvec_aesthetics.demo.config import DemoConfig  # noqa: E402
from taskvec_aesthetics.demo.runner import base_and_bank, default_cache_dir  # noqa: E402
from taskvec_aesthetics.demo.world import build_world  # noqa: E402
from taskvec_aesthetics.personalization.output_ensemble import OutputEnsemble  # noqa: E402
from taskvec_aesthetics.utils.io import atomic_path  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = DemoConfig()
    base, bank, _, _ = base_and_bank(config, build_world(config.world), default_cache_dir(), progress=False)
    tasks = len(bank)
    merged = base.with_coefficients(bank, {name: 1.0 / tasks for name in bank.task_names})
    ones = torch.ones(tasks)
    ensemble = base.with_output_ensemble(bank, OutputEnsemble(bank.task_names, ones / tasks, 0 * ones, ones))
    side = int(
        base.image_processor(images=[Image.new("RGB", (256, 256))], return_tensors="pt")["pixel_values"].shape[-1]
    )
    pixels = torch.randn(args.batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    seconds: dict[str, list[float]] = {"merged": [], "ensemble": []}
    with torch.no_grad():
        for model in (merged, ensemble):  # warm-up
            model(pixel_values=pixels)
        for _ in range(args.runs):  # in turns, so that load on the machine hits both alike
            for name, model in (("merged", merged), ("ensemble", ensemble)):
                began = time.perf_counter()
                model(pixel_values=pixels)
                seconds[name].append(time.perf_counter() - began)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    scoring = ensemble.personalization.info["scoring"]
    result = {
        "command": f"python benchmarks/ensemble_cost.py --batch {args.batch} --runs {args.runs} "
        f"--threads {args.threads}",
        "image_side": side,
        "scoring": scoring,
        "median_seconds": median,
        "time_ratio": median["ensemble"] / median["merged"],
    }
    text = (
        f"# Scoring cost of the output ensemble on the demo's bank\n\n`{result['command']}` ({args.batch} images of "
        f"{side} px per batch, median of {args.runs} batches each, in turns, {args.threads} CPU threads)\n\n"
        "| model | encoder blocks per image | relative | seconds per batch | relative |\n|---|---|---|---|---|\n"
        f"| one merged model | {base.adapter.num_blocks} | 1x | "
        f"{median['merged']:.3f} | 1x |\n"
        f"| output ensemble of {tasks} task models | {scoring['encoder_blocks_per_image']} | "
        f"{scoring['relative_to_one_model']:g}x | {median['ensemble']:.3f} | {result['time_ratio']:.2f}x |\n"
    )
    with atomic_path(RESULTS / "ensemble_cost.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with atomic_path(RESULTS / "ensemble_cost.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
