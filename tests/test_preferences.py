"""Pairwise preferences ("A over B") as input: Bradley-Terry fits, canonical form, validation, CSV and CLI."""

import json
import math
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from planted import images, to_pixels, user_ratings
from test_personalization import _pil_images

from taskvec_aesthetics import AestheticModel
from taskvec_aesthetics.data import load_preferences
from taskvec_aesthetics.evaluation.metrics import srocc
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedPreferences
from taskvec_aesthetics.personalization.personalizer import Personalizer


@pytest.fixture(scope="module")
def world(planted_world):
    return planted_world


def _pairs(utility, n, seed):
    """n pairs of distinct images among the first 2n, preferred by the higher utility."""
    index = torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed)).view(n, 2)
    return index, (utility[index[:, 0]] > utility[index[:, 1]]).double()


def test_preferences_teach_a_planted_taste(world):
    photos = images(260, seed=5)
    utility, _ = user_ratings(photos, [0.6, 0.6, -0.4], noise=0.0, seed=0)
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=60))
    prefix = personalizer.encode(to_pixels(world.base, photos))
    index, preference = _pairs(utility, 30, seed=1)
    coefficients, report = personalizer.fit_encoded(EncodedPreferences(prefix[:60], index, preference))
    test = torch.arange(60, 260)
    learned = srocc(personalizer.predict(coefficients, prefix[test]), utility[test])
    singles = [srocc(s, utility[test]) for s in personalizer.task_scores(prefix[test])]
    picked = singles[int(np.argmax(list(report.zero_shot_accuracy.values())))]
    assert learned > picked + 0.05 and learned > 0.5, (learned, singles)
    assert report.num_pairs == 30 and report.num_ratings == 0 and report.folds == 5 and report.zero_shot_srocc == {}
    assert 0.5 < report.cv_accuracy <= 1 and 0 < report.cv_accuracy_se < 0.2 and report.cv_srocc is None
    assert report.estimate.startswith("expected agreement with your choices on new pairs: ")
    assert "5-fold CV on 30 pairs" in report.estimate
    table = {row["candidate"]: row for row in report.cross_validation}
    assert set(table["single"]) == {"candidate", "accuracy", "accuracy_se", "steps", "chosen"}
    summary = report.summary()
    assert summary["num_pairs"] == 30 and summary["cross_validation"]["accuracy"] == report.cv_accuracy
    # the accuracy of the whole procedure, selection included, with its 90 % interval around it
    low, high = summary["cross_validation"]["interval"]
    assert 0 <= low < report.cv_accuracy < high <= 1
    assert f"(90% interval {low:.0%} to {high:.0%})" in report.estimate
    # the count of pairs that would narrow it to +- 0.15 if its variance shrinks as 1 / pairs; said where it is wide
    more = report.ratings_to_narrow()
    assert more == math.ceil(30 * ((high - low) / 0.3) ** 2) and (more > 30) == (high - low > 0.3)
    assert (f"about {more} pairs in all would narrow it" in report.estimate) == (high - low > 0.3)


def test_the_same_preferences_in_any_order_or_orientation_give_identical_coefficients(world):
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=6, eval_every=3))
    pics = _pil_images(12, seed=7)
    utility = torch.tensor([float(np.asarray(p).mean()) for p in pics])
    triples = [
        (pics[a], pics[b], "a" if utility[a] > utility[b] else "b")
        for a, b in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (0, 5), (3, 8), (1, 10), (2, 7)]
    ]
    triples.append((pics[4], pics[9], "tie"))
    shuffled = [triples[i] for i in np.random.default_rng(0).permutation(len(triples))]
    flipped = [(b, a, {"a": "b", "b": "a", "tie": "tie"}[p]) for a, b, p in triples]
    fits = [personalizer.fit_encoded(personalizer.encode_input(t))[0] for t in (triples, shuffled, flipped)]
    assert all(torch.equal(fits[0].values, fit.values) for fit in fits[1:])
    dataset = (
        datasets.Dataset.from_dict(
            {
                "image_a": [t[0] for t in shuffled],
                "image_b": [t[1] for t in shuffled],
                "preferred": [t[2] for t in shuffled],
            }
        )
        .cast_column("image_a", datasets.Image())
        .cast_column("image_b", datasets.Image())
    )
    assert torch.equal(personalizer.fit(dataset).coefficients.values, fits[0].values)
    with pytest.warns(UserWarning, match="1 of 12 preferences compare a pair of images compared before"):
        repeated = personalizer.encode_input(triples + [triples[0]])
    assert repeated.duplicates == 1 and len(repeated) == 11


def test_preference_validation_errors(world):
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=2))
    a, b, c = _pil_images(3, seed=9)
    with pytest.raises(ValueError, match="row 1 is 'left'; expected one of \\['a', 'b', 'tie'\\]"):
        personalizer.fit([(a, b, "a"), (b, c, "left")])
    with pytest.raises(ValueError, match="all ties"):
        personalizer.fit([(a, b, "tie"), (b, c, "tie")])
    with pytest.raises(ValueError, match="compares an image with itself"):
        personalizer.fit([(a, a.copy(), "a"), (b, c, "b")])
    with pytest.raises(ValueError, match="at least 2 preferences"):
        personalizer.fit([(a, b, "a")])
    with pytest.raises(ValueError, match="rows \\[1\\] are not triples"):
        personalizer.fit([(a, b, "a"), (b, c)])
    dataset = datasets.Dataset.from_dict({"image_a": [a, b], "image_b": [b, c], "winner": ["a", "b"]})
    with pytest.raises(ValueError, match="lacks columns \\['preferred'\\]"):
        personalizer.fit(dataset)
    with pytest.raises(ValueError, match="need ratings on a scale"):
        Personalizer(world.base, world.bank, PersonalizerConfig(calibrate=True)).fit([(a, b, "a"), (b, c, "b")])


def test_preferences_csv_through_the_command_line(world, tmp_path):
    world.base.save_pretrained(tmp_path / "base")
    world.bank.save_pretrained(tmp_path / "bank")
    photos = tmp_path / "photos"
    photos.mkdir()
    pics = _pil_images(16, seed=11)
    for i, pic in enumerate(pics):
        pic.save(photos / f"{i}.png")
    brightness = [float(np.asarray(p).mean()) for p in pics]
    lines = ["image_a,image_b,preferred"] + [
        f"{i}.png,{i + 1}.png,{'a' if brightness[i] > brightness[i + 1] else 'b'}" for i in range(0, 16, 2)
    ]
    (photos / "pairs.csv").write_text("\n".join(lines + ["3.png,8.png,tie"]) + "\n")
    loaded = load_preferences(photos / "pairs.csv")
    assert loaded.column_names == ["image_a", "image_b", "preferred"] and len(loaded) == 9
    (photos / "bad.csv").write_text("image_a,image_b,preferred\n0.png,missing.png,a\n1.png,2.png,left\n")
    with pytest.raises(ValueError, match="line 2.*missing.png.*not found|missing.png"):
        load_preferences(photos / "bad.csv")
    command = [sys.executable, "-m", "taskvec_aesthetics.cli", "personalize", "--ratings", str(photos / "pairs.csv")]
    command += ["--model", str(tmp_path / "base"), "--bank", str(tmp_path / "bank"), "--output", str(tmp_path / "me")]
    done = subprocess.run(command + ["--steps", "4"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "personalized on 9 pairs" in done.stdout and "agreement with your choices" in done.stdout
    record = json.loads((tmp_path / "me" / "personalization.json").read_text())
    assert record["info"]["num_pairs"] == 9
    card = (tmp_path / "me" / "README.md").read_text()
    assert "pairwise preferences: 9" in card and "cross-validated pair accuracy" in card
    reloaded = AestheticModel.from_pretrained(tmp_path / "me")
    assert reloaded.score(pics[:3]).shape == (3,)
    bad = subprocess.run(
        command[:5] + [str(photos / "bad.csv")] + command[6:], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "missing.png" in bad.stderr and "left" in bad.stderr
