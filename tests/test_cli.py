"""The user-facing commands: score, personalize and benchmark, end to end on saved models and files."""

import csv
import json

import pytest
from planted import images, user_ratings

from taskvec_aesthetics import AestheticModel
from taskvec_aesthetics.cli import main


@pytest.fixture(scope="module")
def saved(planted_world, tmp_path_factory):
    """The planted base and bank on disk, and a user's ratings CSV (image paths relative to the CSV)."""
    root = tmp_path_factory.mktemp("cli")
    planted_world.base.save_pretrained(root / "base")
    planted_world.bank.save_pretrained(root / "bank")
    photos = images(30, seed=11)
    (root / "photos").mkdir()
    for i, photo in enumerate(photos):
        photo.save(root / "photos" / f"p{i:02d}.png")
    _, ratings = user_ratings(photos, [0.75, 0.5, 0.0], noise=0.05, seed=3)
    with open(root / "ratings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score", "user_id"])
        for user in ("a", "b"):
            sign = 1 if user == "a" else -1
            writer.writerows([f"photos/p{i:02d}.png", f"{sign * float(r):.4f}", user] for i, r in enumerate(ratings))
    with open(root / "one_user.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        writer.writerows([f"photos/p{i:02d}.png", f"{float(r):.4f}"] for i, r in enumerate(ratings[:20]))
    return root


def test_score_prints_and_writes(saved, capsys, tmp_path):
    assert main(["score", str(saved / "photos"), "--model", str(saved / "base")]) == 0
    table = capsys.readouterr().out
    assert "p00.png" in table and len(table.strip().splitlines()) == 31
    assert (
        main(
            [
                "score",
                str(saved / "photos" / "p01.png"),
                "--model",
                str(saved / "base"),
                "--output",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "s.json").read_text())
    expected = AestheticModel.from_pretrained(saved / "base").score([saved / "photos" / "p01.png"])
    assert rows[0]["score"] == pytest.approx(float(expected[0]), abs=1e-6)
    assert (
        main(["score", str(saved / "photos"), "--model", str(saved / "base"), "--output", str(tmp_path / "s.txt")])
        == 2
    )
    assert "must end in .csv or .json" in capsys.readouterr().err


def test_personalize_command_exports_coefficients(saved, capsys, tmp_path):
    code = main(
        [
            "personalize",
            "--ratings",
            str(saved / "one_user.csv"),
            "--model",
            str(saved / "base"),
            "--bank",
            str(saved / "bank"),
            "--output",
            str(tmp_path / "mine"),
            "--steps",
            "10",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "personalized on 20 ratings" in printed and "5-fold CV on 20 ratings" in printed
    assert (tmp_path / "mine" / "coefficients.safetensors").is_file()
    model = AestheticModel.from_pretrained(tmp_path / "mine")
    base = AestheticModel.from_pretrained(saved / "base")
    photo = [saved / "photos" / "p25.png"]
    assert float((model.score(photo) - base.score(photo)).abs()) > 1e-4
    assert (
        main(
            [
                "personalize",
                "--ratings",
                str(tmp_path / "none.csv"),
                "--model",
                str(saved / "base"),
                "--bank",
                str(saved / "bank"),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def test_benchmark_command_on_a_ratings_file(saved, capsys, tmp_path):
    code = main(
        [
            "benchmark",
            "--ratings",
            str(saved / "ratings.csv"),
            "--model",
            str(saved / "base"),
            "--bank",
            str(saved / "bank"),
            "--shots",
            "10",
            "--repeats",
            "1",
            "--methods",
            "default",
            "uniform",
            "--output",
            str(tmp_path / "bench"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert {r["method"] for r in result["summary"]} == {"default", "uniform"}
    assert {t["user_id"] for t in result["trials"]} == {"a", "b"}
    assert main(["benchmark", "--database", "flickr-aes", "--model", "m", "--bank", "b"]) == 2
    assert "--root" in capsys.readouterr().err
