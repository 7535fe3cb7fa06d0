"""Throughput of scoring a `datasets.Dataset`: the two routes of `docs/scoring-datasets.md` against `score()`.

The same images (the demo's real photos, repeated with varied crops) are scored three ways in one run: a plain
`model.score(images)` on the decoded images (the reference), the batched `Dataset.map` recipe (decoding included, as
a user runs it), and the `image-aesthetics` pipeline over `KeyDataset`. The routes take turns, `--repeats` rounds,
and each reports its best; the ratios to the reference are what to compare across machines. Prints one JSON line, then a table.

    python benchmarks/dataset_scoring.py [--model FOLDER] [--images 256] [--batch-size 64]

By default the model is the ImageNet EfficientNet-Lite0 base with the paper's head at 224 px.

Measured on a shared 2-core CPU machine (`--images 64 --batch-size 32 --repeats 3`, two runs): `score()` 7.6-8.4
images/s; the `Dataset.map` recipe 0.83x and 1.04x of it, the pipeline 0.78x and 0.88x (the other jobs' load moved
between rounds). Without `input_columns="image"` the map ran at 0.49x: it wrote the decoded images back, encoding
each again.
"""

from __future__ import annotations

import argparse
import json
import timeit

import datasets
import torch
from transformers import pipeline
from transformers.pipelines.pt_utils import KeyDataset

from taskvec_aesthetics import AestheticModel, model_fingerprint
from taskvec_aesthetics.demo.photos import load_photos
from taskvec_aesthetics.pipeline import TASK
from taskvec_aesthetics.training.bank_building import LITE0_IMAGENET, init_base


def photo_dataset(count: int) -> datasets.Dataset:
    """``count`` photos (varied crops of the demo's photos, at most 640 px) as a dataset with an `image` column."""
    photos = [photo.image for photo in load_photos()]
    images = []
    for i in range(count):
        image = photos[i % len(photos)]
        inset = (i // len(photos)) * 7 % max(1, min(image.size) // 4)
        crop = image.crop((inset, inset, image.width - inset, image.height - inset)).convert("RGB")
        crop.thumbnail((640, 640))  # the size of a typical web photo dataset's images
        images.append(crop)
    return datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder or Hub id (default: the ImageNet EfficientNet-Lite0 base)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    datasets.disable_caching()  # every repeat computes (a cached map would measure nothing)
    model = AestheticModel.from_pretrained(args.model) if args.model else init_base(LITE0_IMAGENET, image_size=224)
    model.eval()
    photos = photo_dataset(args.images)
    decoded = list(photos["image"])
    size = args.batch_size

    def add_scores(images: list) -> dict:
        return {"aesthetic_score": model.score(images, batch_size=len(images)).tolist()}

    version = f"aesthetic-score-{model_fingerprint(model)[-16:]}"
    scorer = pipeline(TASK, model=model)
    routes = {
        "score() on decoded images": lambda: model.score(decoded, batch_size=size),
        "Dataset.map recipe": lambda: photos.map(
            add_scores, input_columns="image", batched=True, batch_size=size, new_fingerprint=version
        ),
        "pipeline over KeyDataset": lambda: list(scorer(KeyDataset(photos, "image"), batch_size=size)),
    }
    seconds = dict.fromkeys(routes, float("inf"))
    with torch.inference_mode():
        for _ in range(args.repeats):  # the routes take turns, so a change in the machine's load hits them alike
            for name, route in routes.items():
                seconds[name] = min(seconds[name], timeit.timeit(route, number=1))
    reference = seconds["score() on decoded images"]
    record = {
        "images": args.images,
        "batch_size": size,
        "threads": torch.get_num_threads(),
        "device": str(next(model.parameters()).device),
        "images_per_s": {name: args.images / s for name, s in seconds.items()},
        "relative_to_score": {name: reference / s for name, s in seconds.items()},
    }
    print(json.dumps(record))
    print(f"\n{args.images} images, batch {size}, {record['threads']} threads, {record['device']}\n")
    print("| route | images/s | vs score() |\n|---|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {args.images / s:.1f} | {reference / s:.2f}x |")


if __name__ == "__main__":
    main()
