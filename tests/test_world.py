"""The demo's real photos and its seeded simulated world."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from datasets import Image as ImageFeature
from PIL import Image
from scipy.stats import spearmanr

from taskvec_aesthetics.demo.config import SIMULATED_DATABASE_NAMES, DemoConfig, WorldConfig
from taskvec_aesthetics.demo.photos import (
    NUM_DISTINCT_PHOTOS,
    PHOTO_SOURCES,
    load_photos,
)
from taskvec_aesthetics.demo.world import (
    SIMULATED_DATABASES,
    TRAIT_NAMES,
    TRAITS,
    SimulatedUser,
    apply_traits,
    build_world,
    make_database,
    make_pool,
    make_users,
    noise_ceiling,
    rate,
)


@pytest.fixture(scope="module")
def photos():
    return load_photos()


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig.preset("quick"))


@pytest.fixture(scope="module")
def base(photos):
    coffee = next(photo for photo in photos if photo.name == "coffee")
    return coffee.image.crop((100, 0, 500, 400)).resize((112, 112), Image.Resampling.BICUBIC)


# ------------------------------------------------------------------------------------------------ photos
def test_photos_are_distinct_rgb_and_honestly_named(photos):
    assert NUM_DISTINCT_PHOTOS >= 20
    assert len(photos) == len(PHOTO_SOURCES) >= 30
    assert all(photo.image.mode == "RGB" and min(photo.image.size) >= 256 for photo in photos)
    names = [photo.name for photo in photos]
    assert len(set(names)) == len(names)
    distinct = [photo for photo in photos if "/crop-" not in photo.name]
    assert len(distinct) == NUM_DISTINCT_PHOTOS
    assert len({photo.image.tobytes()[:4096] for photo in distinct}) == NUM_DISTINCT_PHOTOS
    sources = {photo.name: photo for photo in distinct}
    for crop in (photo for photo in photos if "/crop-" in photo.name):
        source = sources[crop.name.split("/")[0]]  # every crop names an existing source and keeps its licence
        assert crop.licence == source.licence and crop.origin.startswith("crop of")
    assert all(photo.origin and photo.licence for photo in photos)
    assert sum(photo.greyscale for photo in photos) == 7
    assert not any(photo.greyscale for photo in photos[:14])  # colour photos come first


def test_load_photos_limit_and_order(photos):
    first = load_photos(limit=5)
    assert [photo.name for photo in first] == [photo.name for photo in photos[:5]]
    assert first[3].image.tobytes() == photos[3].image.tobytes()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            load_photos(limit=bad)


# ------------------------------------------------------------------------------------------------ traits
def _gray(image):
    return np.asarray(image.convert("L"), dtype=np.float64)


def _laplacian_variance(image):
    g = _gray(image)
    return float((g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]).var())


def _high_frequency(image):
    return float(np.abs(np.diff(_gray(image), axis=1)).mean())


def _blockiness(image):
    """Mean jump across 8-px JPEG block edges over the mean jump elsewhere."""
    jumps = np.abs(np.diff(_gray(image), axis=1)).mean(axis=0)
    edges = np.arange(jumps.size) % 8 == 7
    return float(jumps[edges].mean() / jumps[~edges].mean())


def _rgb(image):
    return np.asarray(image, dtype=np.float64)


@pytest.mark.parametrize(
    ("trait", "measure", "low", "high"),
    [
        ("sharpness", _laplacian_variance, -1.0, 1.0),
        ("noise", _high_frequency, 0.0, 1.0),
        ("jpeg", _blockiness, 0.0, 1.0),
        ("exposure", lambda im: _rgb(im).mean(), -1.0, 1.0),
        ("saturation", lambda im: _rgb(im).std(axis=2).mean(), -1.0, 1.0),
        ("contrast", lambda im: _gray(im).std(), -1.0, 1.0),
        ("warmth", lambda im: (_rgb(im)[..., 0] - _rgb(im)[..., 2]).mean(), -1.0, 1.0),
    ],
)
def test_each_trait_moves_its_measure_monotonically(base, trait, measure, low, high):
    values = [measure(apply_traits(base, {trait: strength}, seed=3)) for strength in np.linspace(low, high, 5)]
    assert all(a < b for a, b in pairwise(values)), (trait, values)
    assert apply_traits(base, {trait: 0.0}).tobytes() == base.tobytes()


def test_apply_traits_extremes_seed_and_validation(base):
    grey = _rgb(apply_traits(base, {"saturation": -1.0}))
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1
    assert apply_traits(base, {"noise": 0.5}, seed=1).tobytes() == apply_traits(base, {"noise": 0.5}, seed=1).tobytes()
    assert apply_traits(base, {"noise": 0.5}, seed=1).tobytes() != apply_traits(base, {"noise": 0.5}, seed=2).tobytes()
    everything = {name: TRAITS[name].high for name in TRAIT_NAMES}
    assert apply_traits(base, everything).size == base.size
    with pytest.raises(ValueError, match="noise"):
        apply_traits(base, {"noise": -0.5})
    with pytest.raises(ValueError, match="vignette"):
        apply_traits(base, {"vignette": 0.5})
    with pytest.raises(TypeError, match="PIL"):
        apply_traits(np.zeros((8, 8, 3)), {})


# ----------------------------------------------------------------------------------------------- world
def _fingerprint(world):
    data = [world.pool.png, world.pool.strengths.tobytes()]
    for name, dataset in world.databases.items():
        data += [
            name,
            list(dataset["score"]),
            list(dataset["score_distribution"]),
            [row["bytes"] for row in dataset.cast_column("image", ImageFeature(decode=False))["image"]],
        ]
    data += [(user.user_id, user.taste, user.noise) for user in world.users]
    data += [list(world.ratings[user.user_id]["score"]) for user in world.users]
    return data


def test_world_is_deterministic_per_seed(world):
    assert _fingerprint(build_world(WorldConfig.preset("quick"))) == _fingerprint(world)
    other = build_world(WorldConfig.preset("quick", seed=1))
    assert other.pool.png != world.pool.png
    assert not np.array_equal(other.databases["general"]["score"], world.databases["general"]["score"])
    assert [user.taste for user in other.users] != [user.taste for user in world.users]


def test_make_database_matches_world_and_has_standard_columns(world, photos):
    config = world.config
    dataset = make_database(
        "contrast", photos[: config.num_photos], config.images_per_database, config.image_size, config.seed
    )
    assert list(dataset["score"]) == list(world.databases["contrast"]["score"])
    assert set(dataset.column_names) == {"image", "score", "score_distribution", "image_id"}
    row = dataset[0]
    assert row["image"].mode == "RGB" and row["image"].size == (config.image_size, config.image_size)
    distribution = np.asarray(dataset["score_distribution"])
    scores = np.asarray(dataset["score"])
    assert distribution.shape == (config.images_per_database, 10)
    assert dataset.features["score_distribution"].feature.dtype == "float32"
    assert dataset.features["score"].dtype == "float32"
    assert np.allclose(distribution.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(distribution @ np.arange(1, 11), scores, atol=1e-4)
    assert scores.min() >= 1.0 and scores.max() <= 10.0 and scores.std() > 1.0
    assert len(set(dataset["image_id"])) == len(dataset)


@pytest.mark.parametrize("name", list(SIMULATED_DATABASES))
def test_database_scores_follow_their_criterion(world, name):
    criterion = SIMULATED_DATABASES[name].criterion(world.database_strengths[name])
    assert criterion.min() >= 0.0 and criterion.max() <= 1.0
    assert spearmanr(world.databases[name]["score"], criterion).statistic > 0.9


def test_databases_leave_warmth_uncovered_and_describe_themselves():
    assert all("warmth" not in database.weights for database in SIMULATED_DATABASES.values())
    assert {database.kind for database in SIMULATED_DATABASES.values()} == {"iqa", "giaa"}
    covered = {name for database in SIMULATED_DATABASES.values() for name in database.weights}
    assert covered == set(TRAIT_NAMES) - {"warmth"}
    metadata = SIMULATED_DATABASES["general"].metadata()
    assert metadata["kind"] == "giaa" and metadata["score_range"] == [1.0, 10.0]


def test_ratings_follow_each_users_taste(world):
    for user in world.users:
        ratings = world.ratings[user.user_id]
        scores = np.asarray(ratings["score"])
        assert set(ratings["user_id"]) == {user.user_id}
        assert scores.min() >= 1 and scores.max() <= 5 and np.all(scores * 2 == np.rint(scores * 2))
        ceiling = world.noise_ceiling(user.user_id)
        assert 0.6 < ceiling < 1.0  # follows the taste, yet noisy
        assert ceiling == noise_ceiling(user, world.pool, rate(user, world.pool, world.config.seed))
    shuffled = world.ratings[world.users[0].user_id].shuffle(seed=0)
    with pytest.raises(ValueError, match="pool order"):
        noise_ceiling(world.users[0], world.pool, shuffled)


def test_users_have_varied_tastes_including_uncovered_and_negative():
    users = make_users(14, seed=0)
    assert len({user.user_id for user in users}) == 14
    assert all(abs(sum(abs(w) for w in user.taste.values()) - 1.0) < 0.01 for user in users)
    assert any("warmth" in user.taste for user in users)
    rewarded = {name: np.sign(w) for database in SIMULATED_DATABASES.values() for name, w in database.weights.items()}
    assert any(np.sign(w) == -rewarded[name] for user in users for name, w in user.taste.items() if name in rewarded)
    assert users[0].describe().startswith("likes ")
    with pytest.raises(ValueError, match="unknown trait"):
        SimulatedUser("u", {"vignette": 1.0})


def test_pool_strengths_match_greyscale_photos(photos):
    pool = make_pool(photos, 60, 48, seed=0, always=("saturation",))
    grey = {photo.name for photo in photos if photo.greyscale}
    saturation = TRAIT_NAMES.index("saturation")
    assert all((pool.strengths[i, saturation] == 0) == (name in grey) for i, name in enumerate(pool.photo_names))
    assert pool.strength(0).keys() == set(TRAIT_NAMES) and len(pool.to_dataset()) == 60


def test_world_config_validation():
    assert WorldConfig.preset("quick").image_size < WorldConfig().image_size
    for bad in ({"image_size": 8}, {"pool_size": 1}, {"seed": -1}, {"databases": ("aesthetics",)}, {"num_photos": 0}):
        with pytest.raises(ValueError):
            WorldConfig(**bad)
    with pytest.raises(ValueError, match="preset"):
        WorldConfig.preset("huge")
    with pytest.raises(ValueError, match=r"WorldConfig.databases must be some of .*, received \['aesthetics'\]"):
        WorldConfig(databases=("aesthetics",))
    with pytest.raises(TypeError, match="WorldConfig.num_users must be an int, received True"):
        WorldConfig(num_users=True)
    # The config names the databases without building them (it imports no image library).
    assert tuple(SIMULATED_DATABASES) == SIMULATED_DATABASE_NAMES == WorldConfig().databases


def test_demo_config_validation():
    assert DemoConfig.preset("quick").world == WorldConfig.preset("quick")
    for bad in ({"finetune_steps": 0}, {"shots": (1,)}, {"methods": ("magic",)}, {"workers": 0}, {"repeats": 0}):
        with pytest.raises(ValueError, match=f"DemoConfig.{next(iter(bad))} must be"):
            DemoConfig(**bad)
    with pytest.raises(TypeError, match="DemoConfig.world must be a WorldConfig, received dict"):
        DemoConfig(world={"num_users": 2})
    with pytest.raises(ValueError, match="preset"):
        DemoConfig.preset("huge")
