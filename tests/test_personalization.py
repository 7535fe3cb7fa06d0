"""Personalizer: planted ground truth, exact gradients, prefix caching, determinism, validation, exports."""

import json
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from planted import images, to_pixels, user_ratings
from tiny_models import tiny_model

from taskvec_aesthetics import AestheticModel, FingerprintMismatchError, TaskVectorBank
from taskvec_aesthetics.evaluation.metrics import srocc
from taskvec_aesthetics.losses import pairwise_rank_loss
from taskvec_aesthetics.personalization.config import SIMPLE_CANDIDATES, PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedPreferences, EncodedRatings
from taskvec_aesthetics.personalization.many import fit_many
from taskvec_aesthetics.personalization.model_selection import bag_rank_losses as _bag_rank_losses
from taskvec_aesthetics.personalization.model_selection import criterion as _criterion
from taskvec_aesthetics.personalization.model_selection import criterion_values as _criterion_values
from taskvec_aesthetics.personalization.model_selection import interval as _interval
from taskvec_aesthetics.personalization.model_selection import order_scales as _order_scales
from taskvec_aesthetics.personalization.model_selection import procedure_estimate as _procedure_estimate
from taskvec_aesthetics.personalization.optimisation import Distillation as _Distillation
from taskvec_aesthetics.personalization.personalizer import Personalizer


@pytest.fixture(scope="module")
def world(planted_world):
    return planted_world


@pytest.fixture(scope="module")
def pool(world):
    """A pool of images, a user who likes two tasks (0.6, 0.6) and dislikes the third (-0.4), and a k = 20 split."""
    photos = images(300, seed=2)
    utility, ratings = user_ratings(photos, [0.6, 0.6, -0.4], noise=0.1, seed=100)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(100))
    return to_pixels(world.base, photos), utility, ratings, perm[:20], perm[20:]


def test_planted_mixture_beats_every_baseline(world, pool):
    pixels, utility, ratings, rated, test = pool
    personalizer = Personalizer(world.base, world.bank)
    prefix = personalizer.encode(pixels)
    encoded = EncodedRatings(prefix[rated], ratings[rated].double())
    coefficients, report = personalizer.fit_encoded(encoded)

    def test_srocc(values):
        return srocc(personalizer.predict(values, prefix[test]), utility[test])

    learned = test_srocc(coefficients)
    singles = [srocc(s, utility[test]) for s in personalizer.task_scores(prefix[test])]
    picked = singles[int(np.argmax(list(report.zero_shot_srocc.values())))]  # picked on the rated images
    uniform = test_srocc(torch.full((1, len(world.bank)), 1 / len(world.bank)))
    init = test_srocc(report.initial_coefficients)
    # the contract of the default: at least the init, above the uniform mix, never far below the picked single model
    assert learned >= init and learned > uniform and learned > picked - 0.05, (learned, picked, uniform, init)
    assert report.num_ratings == 20 and report.folds == 5
    # learned coefficients recover the planted mixture, beyond any single task model
    layer = test_srocc(personalizer.candidate_coefficients(encoded, report)["layer"])
    assert layer > max(singles) + 0.05, (layer, singles)
    weights = coefficients.task_weights()
    assert weights["task0"] > weights["task2"] and weights["task1"] > weights["task2"]
    # the cross-validated estimate is an honest guess of the test SROCC, with an error bar that covers it
    assert abs(report.cv_srocc - learned) < 3 * report.cv_srocc_se and 0 < report.cv_srocc_se < 0.2


def test_cross_validation_table_and_the_one_standard_error_rule(world, pool):
    pixels, _, ratings, rated, _ = pool
    quick = dict(steps=6, eval_every=3)
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(**quick))
    encoded = EncodedRatings(personalizer.encode(pixels[rated]), ratings[rated].double())
    _, report = personalizer.fit_encoded(encoded)
    table = {row["candidate"]: row for row in report.cross_validation}
    assert list(table) == ["init", "single", "ensemble", "layer", "distil"]
    assert [row["candidate"] for row in report.cross_validation if row["chosen"]] == [report.chosen]
    # the one-standard-error rule: the first candidate within one standard error of the best one's SROCC
    assert report.criterion == "srocc"
    best = max(table.values(), key=lambda row: row["srocc"])
    within = [name for name, row in table.items() if best["srocc"] - row["srocc"] <= best["srocc_se"] + 1e-4]
    assert report.chosen == within[0]
    winner = table[report.chosen]
    assert report.selected_cv == winner["srocc"] and report.cv_srocc_se == winner["srocc_se"]
    # the estimate is the whole procedure's, selection included: below the winner's own (best of several) value here
    assert report.cv_srocc < report.selected_cv, (report.cv_srocc, report.selected_cv)
    low, high = report.cv_interval
    assert -1 <= low < report.cv_srocc < high <= 1
    assert report.estimate.startswith(
        f"expected SROCC on your photos: {report.cv_srocc:.2f} (90% interval {low:.2f} to {high:.2f})"
    )
    assert "5-fold CV on 20 ratings, selection included" in report.estimate
    # 20 ratings say little: the estimate says so, and how many ratings would narrow its interval to +- 0.15
    more = report.ratings_to_narrow()
    assert f"The interval is wide: 20 ratings say little yet; about {more} ratings in all" in report.estimate
    narrowed = _interval(report.cv_srocc, more, "srocc")
    assert more > 20 and narrowed[1] - narrowed[0] < 0.3 + 0.01, (report.cv_srocc, report.cv_interval, more, narrowed)
    summary = report.summary()["cross_validation"]
    assert summary["candidates"] == report.cross_validation and summary["estimate"] == report.estimate
    assert summary["srocc"] == report.cv_srocc and summary["interval"] == [low, high]
    assert summary["selected"] == winner["srocc"]
    # an infinite tolerance keeps the first candidate, the softmax mix; no tolerance keeps the best one
    lenient = Personalizer(world.base, world.bank, PersonalizerConfig(**quick, tolerance=1e9))
    assert lenient.fit_encoded(encoded)[1].chosen == "init"
    strict = Personalizer(world.base, world.bank, PersonalizerConfig(**quick, tolerance=0.0))
    chosen = strict.fit_encoded(encoded)[1]
    assert chosen.selected_cv == max(row["srocc"] for row in chosen.cross_validation)
    by_rank = Personalizer(world.base, world.bank, PersonalizerConfig(**quick, tolerance=0.0, criterion="rank_loss"))
    rows = by_rank.fit_encoded(encoded)[1].cross_validation
    chosen_row = next(row for row in rows if row["chosen"])
    assert chosen_row["rank_loss"] == max(row["rank_loss"] for row in rows) and "rank_loss_se" in chosen_row
    # a simple winner is a task-wise mix; a learned one keeps its granularity
    assert report.coefficients.granularity == ("layer" if report.chosen == "layer" else "task")


def test_the_rank_loss_criterion_measures_order_not_scale():
    target = np.arange(12, dtype=np.float64)
    rng = np.random.default_rng(0)
    good = target + rng.normal(0, 3, 12)
    rows = np.stack([good, 100 * good, 1e-4 * good, np.full(12, 2.0), -good])
    values = _criterion_values(rows, target, "rank_loss", "srocc")
    # any positive rescaling of a candidate scores the same; a constant or a reversed one scores chance (log 2)
    assert values[0] == pytest.approx(values[1], abs=2e-3) and values[0] == pytest.approx(values[2], abs=2e-3)
    assert values[3] == pytest.approx(-math.log(2)) and values[4] == pytest.approx(-math.log(2))
    assert values[0] > -math.log(2)
    # unscaled, the wide candidate's confident mistakes would lose to a near-constant one
    raw = _criterion(rows, target, "rank_loss")
    assert raw[1] < raw[2]
    assert _order_scales(rows, target)[4] == 0.0


def test_a_scale_fitted_on_a_subset_of_many_pairs_is_the_one_fitted_on_all(monkeypatch):
    from taskvec_aesthetics.personalization import model_selection

    rng = np.random.default_rng(0)
    target = rng.normal(size=300)  # 44,850 pairs: beyond SCALE_PAIRS
    rows = np.stack([target + rng.normal(0, noise, 300) for noise in (0.3, 1.0, 3.0)])
    subset = _order_scales(rows, target)
    monkeypatch.setattr(model_selection, "SCALE_PAIRS", 10**9)
    everything = _order_scales(rows, target)
    # the same point of the search's grid, or its neighbour (1.33x apart)
    assert np.all(np.abs(np.log(subset / everything)) <= np.log(1.34)), (subset, everything)


def test_the_bootstrap_picks_step_counts_by_the_rank_loss_of_each_sample_as_the_fit_does():
    rng = np.random.default_rng(0)
    ratings, pairs = rng.normal(size=30), (rng.random(30) > 0.5).astype(np.float64)
    predictions, bags = ratings + rng.normal(size=(4, 30)), rng.integers(0, 30, (6, 30))
    for target, metric in ((ratings, "srocc"), (pairs, "accuracy")):
        at_scale = predictions * _order_scales(predictions, target, metric)[:, None]
        expected = [_criterion(at_scale[:, bag], target[bag], "rank_loss", metric) for bag in bags]
        assert np.allclose(_bag_rank_losses(predictions, target, metric, bags), expected)


def test_the_interval_adds_the_spread_of_the_selection_to_the_sampling_variance():
    # Bonett and Wright's variance of a Spearman correlation: 1.06 / (n - 3) near 0, a third more near 0.9
    low, high = _interval(0.0, 103, "srocc")
    assert math.atanh(high) == pytest.approx(1.6448536 * math.sqrt(1.0 / 100))
    narrow, wide = _interval(0.9, 103, "srocc"), _interval(0.9, 103, "srocc", spread=0.01)
    assert math.atanh(narrow[1]) - math.atanh(0.9) == pytest.approx(1.6448536 * math.sqrt(1.405 / 100))
    assert wide[0] < narrow[0] < 0.9 < narrow[1] < wide[1]
    assert _interval(0.7, 50, "accuracy", spread=0.01)[1] - _interval(0.7, 50, "accuracy")[1] > 0.02
    # one candidate: the pick never changes, so nothing is added; two that each order one half of the images well
    # and are picked by turns: the quality of the pick varies from sample to sample
    target = np.arange(40, dtype=np.float64)
    rng = np.random.default_rng(0)
    first_half = np.where(target < 20, target, rng.permutation(target))
    second_half = np.where(target >= 20, target, 0.3 * rng.permutation(target))
    estimate, spread = _procedure_estimate([first_half[None]], target, "srocc", 0.0, np.zeros(1), seed=0)
    assert spread == pytest.approx(0.0, abs=1e-12) and 0 < estimate < 1
    _, spread = _procedure_estimate([first_half[None], second_half[None]], target, "srocc", 0.0, np.zeros(2), 0)
    assert spread > 1e-4


def test_learned_coefficients_start_from_the_simple_candidate_that_cross_validates_best(world, pool):
    pixels, _, ratings, rated, _ = pool
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=6, eval_every=3))
    encoded = EncodedRatings(personalizer.encode(pixels[rated]), ratings[rated].double()).canonical()
    scores = personalizer._scores(encoded)
    train = torch.arange(12)
    chosen = personalizer._best_simple(encoded, scores, train)
    assert chosen in SIMPLE_CANDIDATES
    start = personalizer._start("layer", encoded, scores, train)
    assert torch.equal(start, personalizer._simple(chosen, scores, train).expand_as(start))
    # the choice sees the training units alone: other ratings of the held-out units change nothing
    changed = EncodedRatings(encoded.prefix, torch.cat([encoded.ratings[:12], -encoded.ratings[12:]]))
    assert personalizer._best_simple(changed, personalizer._scores(changed), train) == chosen
    # too few units to fold: the softmax init
    assert personalizer._best_simple(encoded, scores, torch.arange(3)) == "init"


def test_the_same_ratings_in_any_row_order_give_identical_coefficients(world):
    photos = images(24, seed=7)
    _, ratings = user_ratings(photos, [0.6, 0.6, -0.4], noise=0.1, seed=3)
    rows = [(photo, float(score)) for photo, score in zip(photos, ratings)]
    rows.append((photos[0].copy(), float(ratings[0]) + 1.0))  # the same image rated twice: averaged
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=6, eval_every=3, folds=3))
    fits = []
    for seed in (0, 1, 2):
        order = np.random.default_rng(seed).permutation(len(rows))
        with pytest.warns(UserWarning, match="1 of 25 rated images are duplicates"):
            fits.append(personalizer.fit([rows[i] for i in order]))
    for fit in fits[1:]:
        assert torch.equal(fit.coefficients.values, fits[0].coefficients.values)
        assert fit.report.cross_validation == fits[0].report.cross_validation
    report = fits[0].report
    assert report.num_ratings == 24 and report.duplicates == 1 and report.summary()["duplicates"] == 1
    # pre-encoded ratings in another order (keyed by their prefix rows) give the same fit as well
    with pytest.warns(UserWarning, match="duplicates"):
        encoded = personalizer.encode_ratings(rows)
    encoded.keys = None
    shuffled = encoded.subset(torch.randperm(len(encoded), generator=torch.Generator().manual_seed(5)))
    assert torch.equal(personalizer.fit_encoded(shuffled)[0].values, personalizer.fit_encoded(encoded)[0].values)


def test_model_scores_computed_once_for_a_pool_give_the_same_fit(world, pool):
    pixels, _, ratings, rated, _ = pool
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=6, eval_every=3, folds=3))
    prefix = personalizer.encode(pixels)
    scores = personalizer.model_scores(prefix)  # [T + 1, N]: every image of the pool, once
    assert scores.shape == (len(world.bank) + 1, len(pixels))
    assert torch.allclose(scores[1:], personalizer.task_scores(prefix))
    alone = personalizer.fit_encoded(EncodedRatings(prefix[rated], ratings[rated].double()))
    shared = personalizer.fit_encoded(
        EncodedRatings(prefix[rated], ratings[rated].double(), model_scores=scores[:, rated])
    )
    assert shared[1].chosen == alone[1].chosen and shared[0].allclose(alone[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"model_scores must be \[T \+ 1, N\] = \[5, 20\].*received \[4, 20\]"):
        personalizer.fit_encoded(
            EncodedRatings(prefix[rated], ratings[rated].double(), model_scores=scores[1:, rated])
        )


def test_model_scores_follow_their_images_through_canonical_order_and_subsets():
    prefix = torch.randn(6, 3)
    marked = torch.stack([prefix[:, 0], -prefix[:, 0]])  # each image's column names its prefix row
    ratings = EncodedRatings(prefix, torch.arange(6.0), model_scores=marked)
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5], [1, 0]])
    preferences = EncodedPreferences(prefix, pairs, torch.tensor([1.0, 0.0, 1.0, 0.0]), model_scores=marked)
    with pytest.warns(UserWarning, match="compare a pair of images compared before"):
        canonical_preferences = preferences.canonical()
    for encoded in (
        ratings.canonical(),
        ratings.subset(torch.tensor([4, 1, 2])),
        canonical_preferences,
        preferences.subset(torch.tensor([2, 0])),
    ):
        assert torch.equal(encoded.model_scores, torch.stack([encoded.prefix[:, 0], -encoded.prefix[:, 0]]))


def test_streamed_gradient_path_matches_autograd(world, pool):
    pixels, _, ratings, rated, _ = pool
    fits = {}
    for gradient in ("autograd", "streamed"):
        config = PersonalizerConfig(selection="last", gradient=gradient, steps=20)
        personalizer = Personalizer(world.base, world.bank, config)
        assert personalizer.gradient == gradient
        encoded = EncodedRatings(personalizer.encode(pixels[rated]), ratings[rated].double())
        fits[gradient] = personalizer.fit_encoded(encoded)[0].values
    assert torch.allclose(fits["autograd"], fits["streamed"], atol=1e-5)
    auto = Personalizer(world.base, world.bank, PersonalizerConfig(streamed_threshold=10))
    assert auto.gradient == "streamed"


def test_a_bank_covering_the_embeddings_caches_nothing(world, pool):
    pixels, _, ratings, rated, test = pool
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=5))
    assert personalizer.prefix_blocks is None  # the planted tasks fine-tuned every parameter
    coefficients, _ = personalizer.fit_encoded(
        EncodedRatings(personalizer.encode(pixels[rated]), ratings[rated].double())
    )
    predicted = personalizer.predict(coefficients, personalizer.encode(pixels[test]))
    merged = world.base.with_coefficients(world.bank, coefficients)(pixel_values=pixels[test]).scores.detach()
    assert torch.allclose(predicted, merged, atol=1e-5)


def test_prefix_caching_equals_uncached_path(world, pool):
    pixels, _, ratings, rated, test = pool
    top = [
        n for n in world.bank.parameter_names if n.startswith(("encoder.encoder.layers.1.", "encoder.post_", "head."))
    ]
    bank = TaskVectorBank.from_finetuned(world.base, world.tuned, parameter_names=top)
    personalizer = Personalizer(world.base, bank, PersonalizerConfig(steps=10))
    assert personalizer.prefix_blocks == 1
    coefficients, _ = personalizer.fit_encoded(
        EncodedRatings(personalizer.encode(pixels[rated]), ratings[rated].double())
    )
    cached = personalizer.predict(coefficients, personalizer.encode(pixels[test]))
    uncached = world.base.with_coefficients(bank, coefficients)(pixel_values=pixels[test]).scores.detach()
    assert torch.allclose(cached, uncached, atol=1e-5)


def test_deterministic_and_dropout_off(world, pool):
    pixels, _, ratings, rated, _ = pool
    noisy = world.base.train()  # dropout on in the caller's model must not leak into the fit
    try:
        runs = [Personalizer(noisy, world.bank, PersonalizerConfig(steps=6, eval_every=3)) for _ in range(2)]
        encoded = EncodedRatings(runs[0].encode(pixels[rated]), ratings[rated].double())
        (a, ra), (b, rb) = runs[0].fit_encoded(encoded), runs[1].fit_encoded(encoded)
    finally:
        world.base.eval()
    assert torch.equal(a.values, b.values) and ra.zero_shot_srocc == rb.zero_shot_srocc
    assert ra.cross_validation == rb.cross_validation
    other_seed = Personalizer(world.base, world.bank, PersonalizerConfig(steps=6, eval_every=3, seed=7))
    other_seed = other_seed.fit_encoded(encoded)[1]
    assert other_seed.cross_validation != ra.cross_validation  # the seed draws the folds


def test_pairwise_loss_masks_ties():
    scores = torch.tensor([3.0, 1.0, 2.0])
    tied = torch.tensor([1.0, 1.0, 1.0])
    assert pairwise_rank_loss(scores, tied).item() == 0.0
    ratings = torch.tensor([2.0, 1.0, 1.0])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2  # only pairs (0,1), (0,2)
    assert pairwise_rank_loss(scores, ratings).item() == pytest.approx(expected)
    half = pairwise_rank_loss(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 2.0]), "half")
    assert half.item() == pytest.approx(math.log1p(math.exp(-1.0)) * 0.5 + math.log1p(math.exp(1.0)) * 0.5)


def test_paper_preset():
    paper = PersonalizerConfig.from_preset("paper")
    assert (paper.granularity, paper.pairing, paper.steps, paper.batch_size, paper.learning_rate) == (
        "tensor",
        "half",
        500,
        32,
        1e-2,
    )
    assert paper.selection == "last" and paper.temperature == 10.0
    default = PersonalizerConfig()
    assert default.granularity == "layer" and default.pairing == "all" and default.selection == "cv"
    assert default.candidate_names == ("init", "single", "ensemble", "layer")
    assert default.criterion == "srocc" and default.start == "best" and default.tolerance == 1.0
    # the uniform mix can still be asked for, and keeps its place in the order of simplicity
    assert PersonalizerConfig(candidates=("layer", "uniform", "single")).candidate_names == (
        "single",
        "uniform",
        "layer",
    )
    with pytest.raises(ValueError, match="unknown preset"):
        PersonalizerConfig.from_preset("magic")
    with pytest.raises(ValueError, match="granularity must be one of"):
        PersonalizerConfig(granularity="neuron")
    with pytest.raises(ValueError, match="candidates must be some of"):
        PersonalizerConfig(candidates=("single", "magic"))
    with pytest.raises(ValueError, match="folds must be >= 2"):
        PersonalizerConfig(folds=1)


def _pil_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_validation_errors(world, tmp_path):
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=2))
    pics = _pil_images(4)
    with pytest.raises(ValueError, match="at least 2 distinct ratings"):
        personalizer.fit([(p, 3.0) for p in pics])
    with pytest.raises(ValueError, match="row 2 is nan"):
        personalizer.fit([(p, s) for p, s in zip(pics, [1.0, 2.0, float("nan"), 4.0])])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a jpeg")
    with pytest.raises(ValueError, match="row 1"):
        personalizer.fit([(pics[0], 1.0), (str(broken), 2.0), (pics[2], 3.0)])
    with pytest.raises(ValueError, match="5 ratings for 4 images"):
        personalizer.fit((pics, [1.0, 2.0, 3.0, 4.0, 5.0]))
    with pytest.raises(FingerprintMismatchError):
        Personalizer(tiny_model("clip", seed=3), world.bank)
    dataset = datasets.Dataset.from_dict({"image": pics, "rating": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="lacks columns"):
        personalizer.fit(dataset)


def test_personalize_dataset_then_coefficients_export(world, tmp_path):
    world.base.save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base").eval()
    world.bank.save_pretrained(tmp_path / "bank")
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    pics = _pil_images(12, seed=1)
    dataset = datasets.Dataset.from_dict({"image": pics, "score": [float(i % 5 + 1) for i in range(12)]}).cast_column(
        "image", datasets.Image()
    )
    model = base.personalize(dataset, bank=bank, config=PersonalizerConfig(steps=10, calibrate=True))
    report = model.personalization.info
    assert report["num_ratings"] == 12 and report["calibration"]["slope"] > 0
    assert report["cross_validation"]["folds"] == 5 and report["cross_validation"]["estimate"].startswith("expected")
    with pytest.raises(TypeError, match="config must be a PersonalizerConfig"):
        base.personalize(dataset, bank=bank, config={"steps": 10})
    test = _pil_images(5, seed=2)
    scores = model.score(test)
    assert not torch.allclose(scores, base.score(test))
    model.save_pretrained(tmp_path / "mine", export="coefficients")
    reloaded = AestheticModel.from_pretrained(tmp_path / "mine")
    assert (reloaded.score(test) - scores).abs().max() <= 1e-5
    record = json.loads((tmp_path / "mine" / "personalization.json").read_text())
    assert record["info"]["cross_validation"] == json.loads(json.dumps(report["cross_validation"]))
    assert 1.0 <= float(model.score(pics).mean()) <= 5.0  # calibrated onto the 1..5 rating scale


def test_fit_many(world):
    pics = _pil_images(8, seed=3)
    dataset = datasets.Dataset.from_dict(
        {
            "image": pics * 2,
            "score": [1, 2, 3, 4, 5, 1, 2, 3] + [5, 4, 3, 2, 1, 5, 4, 3],
            "user_id": ["alice"] * 8 + ["bob"] * 8,
        }
    ).cast_column("image", datasets.Image())
    reports = fit_many(world.base, world.bank, dataset, PersonalizerConfig(steps=5))
    assert list(reports) == ["alice", "bob"]
    assert not torch.equal(reports["alice"].coefficients.values, reports["bob"].coefficients.values)
    with pytest.raises(ValueError, match="'user_id' column"):
        fit_many(world.base, world.bank, dataset.remove_columns("user_id"))


def test_adapted_head_layer_travels_with_the_coefficients(world, pool, tmp_path):
    pixels, _, ratings, rated, test = pool
    fits = {}
    for gradient in ("autograd", "streamed"):
        personalizer = Personalizer(
            world.base, world.bank, PersonalizerConfig(selection="last", adapt_head=True, steps=15, gradient=gradient)
        )
        encoded = EncodedRatings(personalizer.encode(pixels[rated]), ratings[rated].double())
        fits[gradient] = personalizer.fit_encoded(encoded)[0]
    coefficients = fits["autograd"]
    assert set(coefficients.extra) == {"head.fc2.weight", "head.fc2.bias"}
    assert all(torch.allclose(coefficients.extra[n], fits["streamed"].extra[n], atol=1e-5) for n in coefficients.extra)
    moved = (
        coefficients.extra["head.fc2.weight"]
        - world.base.with_coefficients(world.bank, coefficients.values.clone()).state_dict()["head.fc2.weight"]
    )
    assert moved.abs().max() > 0  # the head layer really changed beyond the merge
    model = world.base.with_coefficients(world.bank, coefficients)
    expected = personalizer.predict(coefficients, personalizer.encode(pixels[test]))
    assert torch.allclose(model(pixel_values=pixels[test]).scores.detach(), expected, atol=1e-5)
    world.base.save_pretrained(tmp_path / "base")
    world.bank.save_pretrained(tmp_path / "bank")
    base = AestheticModel.from_pretrained(tmp_path / "base")
    mine = base.with_coefficients(TaskVectorBank.from_pretrained(tmp_path / "bank"), coefficients)
    mine.save_pretrained(tmp_path / "mine", export="coefficients")
    assert sum(p.stat().st_size for p in (tmp_path / "mine").iterdir()) < 64 * 1024
    reloaded = AestheticModel.from_pretrained(tmp_path / "mine").eval()
    assert (reloaded(pixel_values=pixels[test]).scores - model(pixel_values=pixels[test]).scores).abs().max() <= 1e-5


def test_distilled_coefficients_learn_from_unlabeled_photos_and_reload_identically(world, tmp_path):
    """The distil candidate fits the merged model to the output ensemble on the person's unrated photos; a folder of
    them changes the fit; the coefficients export of the result reloads with identical scores."""
    world.base.save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base").eval()
    world.bank.save_pretrained(tmp_path / "bank")
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    photos = images(60, seed=7)
    _, ratings = user_ratings(photos, [0.0, 1.0, -0.6], noise=0.1, seed=7)
    rated = [(photos[i], float(ratings[i])) for i in range(16)]
    folder = tmp_path / "unrated"
    folder.mkdir()
    for i, photo in enumerate(photos[16:]):
        photo.save(folder / f"{i:03d}.png")
    config = PersonalizerConfig(steps=10, eval_every=5, candidates=("distil",))
    model = base.personalize(rated, bank=bank, config=config, unlabeled=folder)
    info = model.personalization.info
    assert info["chosen"] == "distil" and info["unlabeled"] == 44
    alone = base.personalize(rated, bank=bank, config=config)
    assert alone.personalization.info["unlabeled"] == 0
    assert not model.personalization.coefficients.allclose(alone.personalization.coefficients)
    test = photos[16:26]
    scores = model.score(test)
    assert not torch.allclose(scores, base.score(test))
    model.save_pretrained(tmp_path / "mine", export="coefficients")
    assert (AestheticModel.from_pretrained(tmp_path / "mine").score(test) - scores).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="holds no image"):
        base.personalize(rated, bank=bank, config=config, unlabeled=tmp_path / "bank" / "task_vectors")


def test_the_distillation_loss_is_one_minus_the_correlation_with_the_teacher():
    batch = EncodedRatings(torch.zeros(2, 3), torch.tensor([1.0, 2.0]))
    teacher = torch.tensor([0.0, 1.0, 2.0])
    same = _Distillation(batch, torch.zeros(3, 3), teacher, weight=2.0)
    _, loss = same.split(torch.tensor([5.0, 6.0, 10.0, 20.0, 30.0]))
    assert abs(float(loss)) < 1e-6  # any increasing linear map of the teacher's scores is a perfect student
    _, loss = same.split(torch.tensor([5.0, 6.0, 30.0, 20.0, 10.0]))
    assert abs(float(loss) - 4.0) < 1e-6  # reversed: 2 x (1 - (-1))
    # without unlabeled photos the teacher scored the batch's own images: one forward pass serves both losses
    own = _Distillation(batch, None, torch.tensor([0.0, 1.0]), weight=2.0)
    assert torch.equal(own.prefix, batch.prefix)
    rated, loss = own.split(torch.tensor([3.0, 1.0]))
    assert torch.equal(rated, torch.tensor([3.0, 1.0])) and abs(float(loss) - 4.0) < 1e-6


def test_one_labelled_progress_bar_per_personalization(world, pool, monkeypatch):
    """One bar for the whole fit, its description naming the fold and candidate, then the refit: not a bar per fold."""
    from taskvec_aesthetics.personalization import personalizer as personalization

    bars = []

    class Recorded(personalization.tqdm):  # the real bar, with what it was told to show kept for the test
        def __init__(self, *args, **kwargs):
            self.descriptions = [kwargs.get("desc")]
            super().__init__(*args, **kwargs)
            bars.append(self)

        def set_description(self, desc=None, refresh=True):
            self.descriptions.append(desc)
            super().set_description(desc, refresh)

    monkeypatch.setattr(personalization, "tqdm", Recorded)
    pixels, _, ratings, rated, _ = pool
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(steps=6, eval_every=3, progress=True))
    personalizer.fit_encoded(EncodedRatings(personalizer.encode(pixels[rated]), ratings[rated].double()))
    assert len(bars) == 1, [bar.descriptions for bar in bars]
    described = bars[0].descriptions
    assert all(d.startswith("Personalizing") for d in described), described
    assert "Personalizing (fold 1/5, layer)" in described and described[-1].startswith("Personalizing (refit ")


def test_a_held_out_rating_never_reaches_its_own_prediction_and_folds_share_one_scale(world, pool):
    """Out-of-fold predictions of every candidate (simple, learned, the output ensemble) are the same whatever the
    held-out images' ratings are; each fold's are quantiles among the rated images, so folds share one scale."""
    pixels, _, ratings, rated, _ = pool
    config = PersonalizerConfig(steps=6, eval_every=3, candidates=("init", "single", "ensemble", "layer", "outputs"))
    personalizer = Personalizer(world.base, world.bank, config)
    prefix = personalizer.encode(pixels[rated])
    encoded = EncodedRatings(prefix, ratings[rated].double()).canonical()
    scores = personalizer._scores(encoded)
    folds = [torch.arange(0, 20, 5) + f for f in range(5)]  # fixed folds: the ratings must not move them
    before = personalizer._cross_validate(encoded, scores, folds)
    held = folds[2]
    changed = encoded.ratings.clone()
    changed[held] = torch.tensor([100.0, -100.0, 7.0, 0.5], dtype=torch.float64)
    altered = EncodedRatings(encoded.prefix, changed, encoded.keys)
    after = personalizer._cross_validate(altered, personalizer._scores(altered), folds)
    for name, (prediction, _, curve) in before.items():
        assert torch.equal(after[name][2][:, held], curve[:, held]), name
        assert ((prediction > 0) & (prediction < 1)).all(), name  # quantiles, on one scale for every fold
    assert not torch.equal(after["layer"][2][:, folds[0]], before["layer"][2][:, folds[0]])  # the ratings do count
