"""Scoring where Hugging Face users expect it: the `image-aesthetics` pipeline and the docs' `datasets` recipe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import perturbed_copy, tiny_model
from transformers import pipeline

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.pipeline import TASK, ImageAestheticsPipeline

RECIPE = Path(__file__).parents[1] / "docs" / "scoring-datasets.md"


def photos(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base and a calibrated personalized model saved as coefficients (it resolves base and bank when loaded)."""
    root = tmp_path_factory.mktemp("pipeline")
    tiny_model("clip").save_pretrained(root / "base")
    base = AestheticModel.from_pretrained(root / "base")
    TaskVectorBank.from_finetuned(base, {"a": perturbed_copy(base, 1, 0.3)}).save_pretrained(root / "bank")
    bank = TaskVectorBank.from_pretrained(root / "bank")
    info = {"calibration": {"slope": 3.0, "intercept": -10.0}}
    base.with_coefficients(bank, {"a": 0.8}, info=info).save_pretrained(root / "mine", export="coefficients")
    return root


@pytest.mark.parametrize("name", ["base", "mine"])
def test_pipeline_scores_each_image_as_score_does(models: Path, name: str, tmp_path: Path) -> None:
    images = photos(5)
    images[1].save(tmp_path / "one.png")
    inputs = [images[0], str(tmp_path / "one.png"), *images[2:]]
    scorer = pipeline(TASK, model=str(models / name))
    assert isinstance(scorer, ImageAestheticsPipeline)
    expected = AestheticModel.from_pretrained(models / name).score(inputs)
    for batch_size in (1, 2):
        outputs = scorer(inputs, batch_size=batch_size)
        assert [set(out) for out in outputs] == [{"score"}] * 5
        assert torch.allclose(torch.tensor([out["score"] for out in outputs]), expected, atol=1e-5)
    assert scorer(images[0])["score"] == pytest.approx(float(expected[0]), abs=1e-5)
    if name == "mine":  # the calibration maps scores onto the rater's scale, away from the base's range
        base = AestheticModel.from_pretrained(models / "base").score(inputs)
        assert not torch.allclose(expected, base, atol=0.1)


def test_pipeline_rejects_other_models_and_options(models: Path) -> None:
    with pytest.raises(TypeError, match="takes no options besides batch_size"):
        pipeline(TASK, model=str(models / "base"))(photos(1)[0], top_k=3)
    with pytest.raises(TypeError, match="needs a taskvec-aesthetics AestheticModel"):
        ImageAestheticsPipeline(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_importing_the_package_registers_the_task_without_loading_torch(models: Path) -> None:
    script = f"""
import sys
import taskvec_aesthetics
assert "torch" not in sys.modules and "transformers.pipelines" not in sys.modules
from transformers import pipeline
scorer = pipeline({TASK!r}, model={str(models / "base")!r})
print(type(scorer).__name__, round(scorer(sys.argv[1])["score"], 4))
"""
    image = models / "photo.png"
    photos(1)[0].save(image)
    done = subprocess.run([sys.executable, "-c", script, str(image)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = float(AestheticModel.from_pretrained(models / "base").score([image])[0])
    assert done.stdout.split() == ["ImageAestheticsPipeline", str(round(expected, 4))]


def test_the_datasets_recipe_of_the_docs_runs_as_written(models: Path, tmp_path: Path, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", RECIPE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2  # Dataset.map, then the pipeline
    folder = tmp_path / "my-photos"
    folder.mkdir()
    for i, image in enumerate(photos(7)):
        image.save(folder / f"p{i}.png")
    expected = AestheticModel.from_pretrained(models / "base").score(sorted(folder.iterdir()))
    threshold = float(expected.median())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        code = block.replace('"user/aesthetic-scorer"', repr(str(models / "base"))).replace("5.5", repr(threshold))
        exec(compile(code, str(RECIPE), "exec"), namespace)
    scored, best = namespace["scored"], namespace["best"]
    assert torch.allclose(torch.tensor(scored["aesthetic_score"]), expected, atol=1e-5)
    assert sorted(best["aesthetic_score"]) == sorted(s for s in scored["aesthetic_score"] if s >= threshold)
    assert 0 < len(best) < len(scored) and (tmp_path / "my-photos-best" / "dataset_info.json").is_file()
    assert torch.allclose(torch.tensor(namespace["scores"]), expected, atol=1e-5)  # the pipeline route
