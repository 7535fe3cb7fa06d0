"""The output ensemble as a candidate and an export kind: it competes in cross-validation, the personalized model
scores exactly as the fitted ensemble, and the `"ensemble"` export reloads to identical scores."""

import copy
import csv
import dataclasses
import json

import pytest
import torch
from planted import build_world, images, to_pixels, user_ratings
from tiny_models import perturbed_copy, pixels, tiny_model
from transformers import pipeline

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.cli import main
from taskvec_aesthetics.errors import InputError, IntegrityError
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedRatings, Unlabeled
from taskvec_aesthetics.personalization.many import personalize_many
from taskvec_aesthetics.personalization.model_selection import candidate_names, fit_output_ensemble
from taskvec_aesthetics.personalization.output_ensemble import OutputEnsemble, scoring_cost
from taskvec_aesthetics.personalization.personalizer import Personalizer
from taskvec_aesthetics.pipeline import TASK

#: A taste no positive mix of the task models reaches: green counts for, blue against (tasks 1 and 2).
TASTE = [0.0, 1.0, -0.8]
QUICK = dict(steps=4, eval_every=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A planted world whose tasks changed only the top block, neck and head (one block is a shared prefix), saved."""
    root = tmp_path_factory.mktemp("ensemble")
    world = build_world(top_blocks=1)
    world.base.save_pretrained(root / "base")
    world.bank.save_pretrained(root / "bank")
    base = AestheticModel.from_pretrained(root / "base").eval()
    bank = TaskVectorBank.from_pretrained(root / "bank", base=base)
    return root, base, bank


@pytest.fixture(scope="module")
def fitted(world):
    """A fit of 40 ratings of `TASTE` where the output ensemble competes with the softmax mix, and what it saw."""
    _, base, bank = world
    photos = images(40, seed=21)
    _, ratings = user_ratings(photos, TASTE, noise=0.02, seed=5)
    config = PersonalizerConfig(candidates=("init", "outputs"), **QUICK)
    result = Personalizer(base, bank, config).fit(list(zip(photos, ratings.tolist())))
    return photos, ratings, result


def task_model_scores(base, bank, photos):
    """`[T, N]` each task model's (theta_0 + tau_t) scores, from models merged the ordinary way."""
    rows = []
    for t, name in enumerate(bank.task_names):
        one_hot = {n: float(n == name) for n in bank.task_names}
        rows.append(base.with_coefficients(bank, one_hot).score(photos))
    return torch.stack(rows)


def test_the_presets_and_the_candidates():
    assert "outputs" not in PersonalizerConfig().candidate_names
    assert "outputs" not in PersonalizerConfig.from_preset("default").candidate_names
    ensemble = PersonalizerConfig.from_preset("ensemble", granularity="task")
    assert ensemble.candidate_names == ("outputs", "init", "single", "ensemble", "task")  # first: it breaks ties
    assert ensemble.default_recipe and not PersonalizerConfig(candidates=("init", "outputs")).default_recipe
    assert PersonalizerConfig.from_preset("ensemble", candidates=("init",)).candidate_names == ("init",)


def test_the_ensemble_competes_where_it_is_cheap_and_its_distillation_where_it_is_not():
    default = PersonalizerConfig(granularity="task")
    one_pass = ("init", "single", "ensemble", "task")
    assert candidate_names(default, None, ensemble_cost=1.375) == ("outputs", *one_pass)
    assert candidate_names(default, None, ensemble_cost=4.0) == (*one_pass, "distil")
    assert candidate_names(dataclasses.replace(default, max_scoring_cost=0.0), None, 1.375) == (*one_pass, "distil")
    pool = Unlabeled(torch.zeros(3, 2), torch.zeros(4, 3))  # photos given: the distilled candidate competes too
    assert candidate_names(default, pool, ensemble_cost=1.375) == ("outputs", *one_pass, "distil")
    preset = PersonalizerConfig.from_preset("ensemble", granularity="task")
    assert candidate_names(preset, None, ensemble_cost=4.0) == ("outputs", *one_pass, "distil")
    listed = PersonalizerConfig(candidates=("init", "task"))  # listed candidates are what they say
    assert candidate_names(listed, pool, ensemble_cost=4.0) == ("init", "task")


def test_by_default_the_ensemble_competes_where_it_costs_at_most_max_scoring_cost(world, fitted, tmp_path):
    _, base, bank = world
    photos, ratings, _ = fitted
    data = list(zip(photos, ratings.tolist()))
    # This bank: 1 shared block + 4 task models x 1 covered block, over 2 blocks. The demo's: 15 + 7 x 1 over 16.
    assert Personalizer(base, bank).ensemble_cost == 2.5
    assert scoring_cost(7, 16, 15)["relative_to_one_model"] == 1.375 <= PersonalizerConfig().max_scoring_cost
    one_pass = Personalizer(base, bank, PersonalizerConfig(**QUICK)).fit(data)
    names = [row["candidate"] for row in one_pass.report.cross_validation]
    assert "outputs" not in names and one_pass.report.ensemble is None
    assert names[-1] == "distil"  # the ensemble's one-pass stand-in competes in its place
    cheap = Personalizer(base, bank, PersonalizerConfig(max_scoring_cost=2.5, **QUICK)).fit(data)
    assert [row["candidate"] for row in cheap.report.cross_validation] == ["outputs", *names[:-1]]  # first: ties
    assert cheap.report.chosen == "outputs"  # a taste with a negative weight: the ensemble cross-validates best
    # explicit candidates are what they say, whatever the cost
    listed = PersonalizerConfig(candidates=("init", "single"), max_scoring_cost=9.0, **QUICK)
    assert [row["candidate"] for row in Personalizer(base, bank, listed).fit(data).report.cross_validation] == [
        "init",
        "single",
    ]
    # the default save of the winner is its kilobyte export, and it reloads to the same scores
    cheap.model.save_pretrained(tmp_path / "mine")
    reloaded = AestheticModel.from_pretrained(tmp_path / "mine")
    x = pixels(3)
    assert torch.equal(reloaded(pixel_values=x).scores, cheap.model(pixel_values=x).scores)


def test_the_output_ensemble_competes_wins_and_the_model_scores_as_it(world, fitted):
    _, base, bank = world
    photos, _, result = fitted
    report, model = result.report, result.model
    table = {row["candidate"]: row for row in report.cross_validation}
    assert list(table) == ["outputs", "init"]
    assert report.chosen == "outputs" and table["outputs"]["chosen"], table
    assert table["outputs"]["srocc"] > table["init"]["srocc"] + 0.1, table
    ensemble = report.ensemble
    assert ensemble is not None and model.personalization.ensemble is ensemble
    assert model.personalization.coefficients is None
    weights = ensemble.task_weights()
    assert weights["task1"] > 0 > weights["task2"], weights  # a criterion that counts against the taste
    # the model's scores are the fitted ensemble's: weights @ each task model's standardized scores
    new = images(6, seed=22)
    expected = ensemble.weights @ ((task_model_scores(base, bank, new).double() - ensemble.mean[:, None])
                                   / ensemble.spread[:, None])  # fmt: skip
    assert torch.allclose(model.score(new).double(), expected, atol=1e-5)
    # standardized over the rated images only: their mean and spread under each task model
    rated = task_model_scores(base, bank, photos).double()
    assert torch.allclose(ensemble.mean, rated.mean(1), atol=1e-5)
    assert torch.allclose(ensemble.spread, rated.std(1), atol=1e-5)
    # the cost is stated: one pass of the frozen block, then T passes of the covered one
    scoring = model.personalization.info["scoring"]
    assert scoring["shared_blocks"] == 1 and scoring["covered_blocks"] == 1 and scoring["task_models"] == 4
    assert scoring["encoder_blocks_per_image"] == 5 and "4 passes of the 1 covered block" in scoring["text"]


def test_out_of_fold_predictions_use_the_training_units_only(world):
    _, base, bank = world
    personalizer = Personalizer(base, bank, PersonalizerConfig(candidates=("init", "outputs"), **QUICK))
    photos = images(30, seed=23)
    _, ratings = user_ratings(photos, TASTE, noise=0.05, seed=6)
    encoded = personalizer.encode_ratings(list(zip(photos, ratings.tolist()))).canonical()
    scores = personalizer._scores(encoded)
    folds = [torch.arange(0, 15), torch.arange(15, 30)]
    before = personalizer._outputs_out_of_fold(encoded, scores, folds, None)
    # another rating of the held-out units changes nothing of their own predictions
    changed = personalizer._scores(EncodedRatings(encoded.prefix, encoded.ratings.clone(), encoded.keys))
    changed.target[15:] = -changed.target[15:]
    after = personalizer._outputs_out_of_fold(encoded, changed, folds, None)
    assert torch.equal(before[15:], after[15:]) and not torch.equal(before[:15], after[:15])
    # with unlabeled photos, the standardization is theirs (images only, never a rating)
    pool_prefix = personalizer.encode(to_pixels(base, images(12, seed=24)))
    pool = Unlabeled(pool_prefix, personalizer.task_scores(pool_prefix).double())
    ensemble = fit_output_ensemble(encoded, scores, torch.arange(15), pool, 10.0, bank.task_names)
    assert torch.allclose(ensemble.mean, pool.tasks.mean(1)) and torch.allclose(ensemble.spread, pool.tasks.std(1))


def test_ensemble_export_is_small_checked_and_reloads_to_identical_scores(world, fitted, tmp_path):
    root, _, _ = world
    _, _, result = fitted
    model = result.model
    model.save_pretrained(tmp_path / "mine", export="ensemble")
    files = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert "ensemble.safetensors" in files and "checksums.json" in files
    assert "model.safetensors" not in files and "coefficients.safetensors" not in files
    total = sum(p.stat().st_size for p in (tmp_path / "mine").iterdir())
    assert total < 64 * 1024, f"ensemble export is {total} bytes"
    config = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert config["base_model"]["path"] == str((root / "base").resolve())
    assert config["bank"]["tasks"] == ["task0", "task1", "task2", "task3"]
    record = json.loads((tmp_path / "mine" / "personalization.json").read_text())
    assert record["export"] == "ensemble" and record["ensemble"]["task_names"] == ["task0", "task1", "task2", "task3"]
    assert record["info"]["chosen"] == "outputs" and "coefficients" not in record
    assert record["info"]["scoring"]["encoder_blocks_per_image"] == 5 and "passes" in record["info"]["scoring"]["text"]
    card = (tmp_path / "mine" / "README.md").read_text()
    assert "output ensemble of 4 task models" in card and "4 passes of the 1 covered block" in card
    reloaded = AestheticModel.from_pretrained(tmp_path / "mine")
    x = pixels(5)
    assert torch.equal(reloaded(pixel_values=x).scores, model(pixel_values=x).scores)
    assert torch.equal(reloaded.personalization.ensemble.weights, model.personalization.ensemble.weights)
    # the transformers pipeline scores as the model does
    photos = images(3, seed=27)
    scorer = pipeline(TASK, model=str(tmp_path / "mine"))
    piped = torch.tensor([row["score"] for row in scorer(photos)])
    assert torch.allclose(piped, model.score(photos), atol=1e-5)
    # files are checked on read-back
    path = tmp_path / "mine" / "ensemble.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="ensemble.safetensors"):
        AestheticModel.from_pretrained(tmp_path / "mine")


def test_an_export_of_the_wrong_kind_is_a_clear_error(world, fitted, tmp_path):
    _, base, bank = world
    model = fitted[2].model
    with pytest.raises(InputError, match="no merged weights.*max_scoring_cost=0"):
        model.save_pretrained(tmp_path / "merged", export="merged")
    assert not (tmp_path / "merged").exists()
    # asked for its kilobyte export, or for nothing, an ensemble writes the ensemble export
    x = pixels(2)
    for kind in ("coefficients", None):
        model.save_pretrained(tmp_path / str(kind), export=kind)
        assert (tmp_path / str(kind) / "ensemble.safetensors").is_file()
        assert not (tmp_path / str(kind) / "coefficients.safetensors").exists()
        reloaded = AestheticModel.from_pretrained(tmp_path / str(kind))
        assert torch.equal(reloaded(pixel_values=x).scores, model(pixel_values=x).scores)
    mixed = base.with_coefficients(bank, {"task0": 0.5, "task1": 0.5})
    with pytest.raises(InputError, match="'coefficients' or 'merged'"):
        mixed.save_pretrained(tmp_path / "mixed", export="ensemble")
    with pytest.raises(InputError, match="export='merged'"):
        base.save_pretrained(tmp_path / "base", export="ensemble")


def test_without_a_frozen_prefix_the_ensemble_runs_t_full_passes():
    base = tiny_model("clip")
    bank = TaskVectorBank.from_finetuned(base, {f"t{i}": perturbed_copy(base, i, scale=0.1) for i in range(2)})
    ensemble = OutputEnsemble(bank.task_names, [0.7, -0.4], [5.0, 5.5], [0.2, 0.3])
    model = base.with_output_ensemble(bank, ensemble)
    assert model.personalization.info["scoring"]["shared_blocks"] == 0 and base.personalization is None
    assert "2 full passes" in model.personalization.info["scoring"]["text"]
    x = pixels(3)
    tasks = torch.stack(
        [base.with_coefficients(bank, {n: float(n == name) for n in bank.task_names})(pixel_values=x).scores
         for name in bank.task_names]
    )  # fmt: skip
    assert torch.allclose(model(pixel_values=x).scores.double(), ensemble.combine(tasks), atol=1e-5)
    with pytest.raises(InputError, match="scores only"):
        model(pixel_values=x, labels=torch.ones(3))
    with pytest.raises(InputError, match="pass pixel_values"):
        model(prefix_hidden=base.encode_prefix(x, 1), prefix_blocks=1)


def test_the_ensemble_preset_from_the_command_line(world, tmp_path, capsys):
    root, _, _ = world
    photos = images(30, seed=25)
    _, ratings = user_ratings(photos, TASTE, noise=0.02, seed=7)
    (tmp_path / "photos").mkdir()
    with open(tmp_path / "ratings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        for i, (photo, rating) in enumerate(zip(photos, ratings.tolist())):
            photo.save(tmp_path / "photos" / f"p{i:02d}.png")
            writer.writerow([f"photos/p{i:02d}.png", f"{rating:.4f}"])
    command = ["personalize", "--ratings", str(tmp_path / "ratings.csv"), "--model", str(root / "base")]
    command += ["--bank", str(root / "bank"), "--output", str(tmp_path / "out"), "--preset", "ensemble"]
    assert main([*command, "--steps", "4", "--eval-every", "2"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "personalization.json").read_text())
    assert "outputs" in record["info"]["personalizer"]["candidates"]
    assert "outputs" in {row["candidate"] for row in record["info"]["cross_validation"]["candidates"]}
    # it wins against the one-pass candidates here, and is saved as the only kind it fits, its cost said
    assert record["info"]["chosen"] == "outputs" and record["export"] == "ensemble" and "saved (ensemble)" in printed
    assert record["info"]["scoring"]["text"] in printed and "weight per standardized task score" in printed
    reloaded = AestheticModel.from_pretrained(tmp_path / "out")
    assert reloaded.score([tmp_path / "photos" / "p00.png"]).shape == (1,)
    # where it would compete by default, --export merged keeps the fit one pass; with the preset it is refused first
    cheap = [*command[:-2], "--max-scoring-cost", "3", "--steps", "4", "--eval-every", "2"]
    assert main([*cheap, "--output", str(tmp_path / "auto")]) == 0, capsys.readouterr().err
    assert "saved (ensemble)" in capsys.readouterr().out
    one_pass = [*command[:-4], "--steps", "4", "--eval-every", "2", "--export", "merged"]
    assert main([*one_pass, "--output", str(tmp_path / "merged")]) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "merged" / "personalization.json").read_text())
    assert record["export"] == "merged" and record["info"]["personalizer"]["max_scoring_cost"] == 0.0
    assert main([*command, "--export", "merged"]) == 2
    assert "--export merged needs a one-pass model" in capsys.readouterr().err


def test_personalize_many_saves_an_output_ensemble_as_one_and_resumes(world, tmp_path):
    _, base, bank = world
    photos = images(24, seed=26)
    (tmp_path / "photos").mkdir()
    with open(tmp_path / "ratings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score", "user_id"])
        for user, taste in (("a", TASTE), ("b", [1.0, 0.5, 0.0])):
            _, ratings = user_ratings(photos, taste, noise=0.02, seed=8)
            for i, (photo, rating) in enumerate(zip(photos, ratings.tolist())):
                photo.save(tmp_path / "photos" / f"p{i:02d}.png")
                writer.writerow([f"photos/p{i:02d}.png", f"{rating:.4f}", user])
    config = PersonalizerConfig.from_preset("ensemble", **QUICK)
    result = personalize_many(base, bank, tmp_path / "ratings.csv", tmp_path / "out", config, progress=False)
    assert result.fitted == 2
    record = json.loads((tmp_path / "out" / "users" / "a" / "personalization.json").read_text())
    assert record["info"]["chosen"] == "outputs" and record["export"] == "ensemble"
    assert (tmp_path / "out" / "users" / "a" / "ensemble.safetensors").is_file()
    assert AestheticModel.from_pretrained(tmp_path / "out" / "users" / "a").personalization.ensemble is not None
    again = personalize_many(base, bank, tmp_path / "ratings.csv", tmp_path / "out", config, progress=False)
    assert again.fitted == 0 and again.skipped == 2  # an ensemble export counts as written


def test_preferences_compete_with_the_output_ensemble_too(world):
    _, base, bank = world
    photos = images(40, seed=28)
    utility, _ = user_ratings(photos, TASTE, noise=0.0, seed=9)
    pairs = [(photos[i], photos[i + 20], "a" if utility[i] > utility[i + 20] else "b") for i in range(20)]
    pairs += [(photos[i], photos[i + 1], "a" if utility[i] > utility[i + 1] else "b") for i in range(0, 38, 2)]
    config = PersonalizerConfig(candidates=("init", "outputs"), **QUICK)
    result = Personalizer(base, bank, config).fit(pairs)
    table = {row["candidate"]: row for row in result.report.cross_validation}
    assert table["outputs"]["accuracy"] > table["init"]["accuracy"], table
    assert result.report.chosen == "outputs" and result.model.personalization.ensemble is not None
    # the personalized model orders the compared photos by the fitted ensemble
    scores = result.model.score(photos)
    agree = [(scores[i] > scores[i + 20]) == (utility[i] > utility[i + 20]) for i in range(20)]
    assert sum(agree) >= 16, agree


def test_an_ensemble_push_checks_its_kind_and_references_before_any_upload(tmp_path):
    base = tiny_model("clip")
    bank = TaskVectorBank.from_finetuned(base, {"ava": perturbed_copy(base, 1)})
    mine = base.with_output_ensemble(bank, OutputEnsemble(["ava"], [1.0], [5.0], [0.5]))
    # The suite runs offline: reaching the Hub would raise a connection error, not these.
    with pytest.raises(InputError, match="no merged weights"):
        mine.push_to_hub("someone/mine", export="merged")
    with pytest.raises(InputError, match="an ensemble export on the Hub must reference its base model by Hub repo id"):
        mine.push_to_hub("someone/mine", export="ensemble")
    with pytest.raises(InputError, match="this model is not one"):
        base.push_to_hub("someone/base", export="ensemble")


def test_the_app_refuses_a_recipe_with_the_output_ensemble_before_loading_anything(tmp_path):
    from taskvec_aesthetics.app.resources import load_resources

    with pytest.raises(InputError, match="one-pass models.*'outputs'"):
        load_resources(photos=tmp_path / "missing", config=PersonalizerConfig.from_preset("ensemble"))


def test_the_ensemble_keeps_its_task_models_until_the_weights_under_them_change(world):
    _, base, bank = world
    ensemble = OutputEnsemble(bank.task_names, [1.0, -0.5, 0.2, 0.3], [0.0] * 4, [1.0] * 4)
    model = base.with_output_ensemble(bank, ensemble)
    x = pixels(3)
    first = model(pixel_values=x).scores
    kept = model._ensemble_members
    assert torch.equal(model(pixel_values=x).scores, first) and model._ensemble_members is kept
    with torch.no_grad():  # a covered parameter of the base changes in place: the task models are merged again
        dict(model.named_parameters())["head.fc2.weight"].add_(0.5 * torch.randn(10, 16))
    changed = model(pixel_values=x).scores
    assert model._ensemble_members is not kept and not torch.equal(changed, first)
    assert torch.equal(changed, copy.deepcopy(model)(pixel_values=x).scores)
