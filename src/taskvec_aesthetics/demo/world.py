"""The demo's seeded simulated world: image traits, databases that score them, and raters with known tastes.

Every image is a random crop of a real photograph (see [`load_photos`]) resized to the working resolution, then
given random strengths of seven visible traits (:data:`TRAITS`; applied after resizing so they stay visible at
64-128 px). Seven simulated databases (:data:`SIMULATED_DATABASES`) score such images: one per trait except
``warmth``, which no database covers so that the bank's span is not perfect, and a ``general`` one mixing several
traits like a generic aesthetics (GIAA) database. Each database image carries random strengths of *all* traits
but is scored only on its database's criterion, through 25 simulated votes on 1..10.

Simulated raters ([`SimulatedUser`]) with a taste over the traits (positive or negative, for some on ``warmth``)
all rate one shared pool on 1..5 with rater noise; their noise-free utility gives the noise ceiling.
Everything is deterministic for a given seed; [`build_world`] builds it all.
"""

from __future__ import annotations

import io
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image, ImageFilter
from scipy.stats import spearmanr

from ..errors import InputError, InputTypeError
from .config import WorldConfig
from .photos import Photo, load_photos

__all__ = [
    "SIMULATED_DATABASES",
    "TRAITS",
    "TRAIT_NAMES",
    "Pool",
    "SimulatedDatabase",
    "SimulatedUser",
    "Trait",
    "World",
    "WorldConfig",
    "apply_traits",
    "build_world",
    "make_database",
    "make_pool",
    "make_users",
    "noise_ceiling",
    "rate",
    "score_database",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- traits
@dataclass(frozen=True)
class Trait:
    """A visible image trait: its strength range (0 always means unchanged) and words for its two directions."""

    name: str
    low: float
    high: float
    description: str
    positive: str  # what a positive taste weight likes, e.g. "sharp"
    negative: str  # what a negative taste weight likes, e.g. "soft"


TRAITS: dict[str, Trait] = {
    trait.name: trait
    for trait in (
        Trait(
            "sharpness", -1.0, 1.0, "Gaussian blur below 0 (sigma 2.2 px at 128 px), sharpening above", "sharp", "soft"
        ),
        Trait(
            "noise", 0.0, 1.0, "additive Gaussian noise, standard deviation 0.12 of the range at 1", "grainy", "clean"
        ),
        Trait("jpeg", 0.0, 1.0, "JPEG compression at quality 5 + 90 * (1 - strength) ** 2", "blocky", "artefact-free"),
        Trait("exposure", -1.0, 1.0, "brightness times 2 ** (1.25 * strength)", "bright", "dark"),
        Trait("saturation", -1.0, 1.0, "chroma times 1 + strength: greyscale at -1", "vivid", "muted"),
        Trait("contrast", -1.0, 1.0, "deviation from the mean luminance times 2 ** strength", "punchy", "flat"),
        Trait("warmth", -1.0, 1.0, "red times 1 + 0.25 * strength, blue times 1 - 0.25 * strength", "warm", "cool"),
    )
}
"""The traits, in a fixed order, with their strength ranges."""
TRAIT_NAMES: tuple[str, ...] = tuple(TRAITS)
_LOW, _HIGH = np.array([(trait.low, trait.high) for trait in TRAITS.values()]).T
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_EXPOSURE_STOPS, _WARMTH_GAIN, _NOISE_STD, _BLUR_SIGMA = 1.25, 0.25, 0.12, 2.2


def _check_strengths(strengths: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(strengths, Mapping):
        raise InputTypeError(
            f"strengths must be a mapping from trait name to float, received {type(strengths).__name__}"
        )
    for name, value in strengths.items():
        if name not in TRAITS:
            raise InputError(f"unknown trait {name!r}; expected one of {list(TRAIT_NAMES)}")
        if not TRAITS[name].low <= float(value) <= TRAITS[name].high:
            raise InputError(
                f"strength of {name!r} must lie in [{TRAITS[name].low}, {TRAITS[name].high}], received {value!r}"
            )
    return {name: float(value) for name, value in strengths.items()}


def apply_traits(image: Image.Image, strengths: Mapping[str, float], seed: int = 0) -> Image.Image:
    """Apply trait strengths to an image already resized to the working resolution.

    Colour traits act first (exposure, warmth, saturation, contrast), then blur or sharpening, then noise, then
    JPEG compression, like a camera pipeline. Blur and sharpening radii scale with the image size (relative to
    128 px), so a strength looks alike at any resolution.

    Args:
        image (`PIL.Image.Image`): The image; converted to RGB.
        strengths (`Mapping[str, float]`): Trait name to strength, within the ranges of :data:`TRAITS`; traits
            left out are not applied.
        seed (`int`): Seed of the noise.

    Returns:
        `PIL.Image.Image`: A new RGB image of the same size.
    """
    if not isinstance(image, Image.Image):
        raise InputTypeError(f"image must be a PIL.Image.Image, received {type(image).__name__}")
    s = dict.fromkeys(TRAIT_NAMES, 0.0) | _check_strengths(strengths)
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if s["exposure"]:
        x = x * 2.0 ** (_EXPOSURE_STOPS * s["exposure"])
    if s["warmth"]:
        x = x * np.array([1 + _WARMTH_GAIN * s["warmth"], 1.0, 1 - _WARMTH_GAIN * s["warmth"]], dtype=np.float32)
    if s["saturation"]:
        luma = (x @ _LUMA)[..., None]
        x = luma + (x - luma) * (1.0 + s["saturation"])
    if s["contrast"]:
        mean = float((x @ _LUMA).mean())
        x = mean + (x - mean) * 2.0 ** s["contrast"]
    out = Image.fromarray(np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))
    scale = min(out.size) / 128.0
    if s["sharpness"] < 0:
        out = out.filter(ImageFilter.GaussianBlur(radius=-s["sharpness"] * _BLUR_SIGMA * scale))
    elif s["sharpness"] > 0:
        out = out.filter(ImageFilter.UnsharpMask(radius=1.2 * scale, percent=round(250 * s["sharpness"]), threshold=0))
    if s["noise"]:
        noisy = np.asarray(out, dtype=np.float32)
        std = 255.0 * _NOISE_STD * s["noise"]
        noisy += np.random.default_rng(seed).standard_normal(noisy.shape, dtype=np.float32) * std
        out = Image.fromarray(np.rint(np.clip(noisy, 0, 255)).astype(np.uint8))
    if s["jpeg"]:
        buffer = io.BytesIO()
        # Quadratic, so that the visible low-quality end takes more of the range than the invisible high end.
        out.save(buffer, format="JPEG", quality=round(5 + 90 * (1.0 - s["jpeg"]) ** 2))
        out = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return out


# ----------------------------------------------------------------------------------------- image pools
def _stream(seed: int, *names: str) -> np.random.Generator:
    """An independent random stream per (seed, names), stable across runs and platforms."""
    return np.random.default_rng([int(seed)] + [zlib.crc32(name.encode()) for name in names])


_FEATURES = {
    "image": ImageFeature(),
    "score": Value("float32"),
    "user_id": Value("string"),
    "score_distribution": List(Value("float32"), length=10),
    "image_id": Value("string"),
}


def _dataset(columns: dict) -> Dataset:
    """A dataset with the library's standard column types."""
    return Dataset.from_dict(columns, features=Features({name: _FEATURES[name] for name in columns}))


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, received {value!r}")


@dataclass
class Pool:
    """Rendered images with their known trait strengths.

    Args:
        image_ids (`list[str]`): One id per image.
        png (`list[bytes]`): The images, PNG-encoded (lossless).
        strengths (`np.ndarray`): ``[num_images, len(TRAIT_NAMES)]`` float32 strengths, in :data:`TRAIT_NAMES` order.
        photo_names (`list[str]`): The source photograph of each image.
    """

    image_ids: list[str]
    png: list[bytes]
    strengths: np.ndarray
    photo_names: list[str]

    def __len__(self) -> int:
        return len(self.image_ids)

    def image(self, index: int) -> Image.Image:
        """Decode one image."""
        return Image.open(io.BytesIO(self.png[index])).convert("RGB")

    def strength(self, index: int) -> dict[str, float]:
        """The trait strengths of one image, by name."""
        return dict(zip(TRAIT_NAMES, map(float, self.strengths[index])))

    def to_dataset(self) -> Dataset:
        """The images as a dataset with columns ``image`` and ``image_id``."""
        return _dataset({"image": self._image_column(), "image_id": list(self.image_ids)})

    def _image_column(self) -> list[dict]:
        return [{"bytes": data, "path": None} for data in self.png]


def make_pool(
    photos: Sequence[Photo],
    num_images: int,
    image_size: int,
    seed: int,
    *,
    always: Sequence[str] = (),
    p_active: float = 0.6,
    id_prefix: str = "pool",
) -> Pool:
    """Render images: random square crop (60-100 % of the short side) of a photo, random flip, resize, traits.

    Photos are used in turn (in a seeded order), so each appears about equally often. Each trait is applied with
    probability ``p_active`` (those in ``always`` always), with a strength uniform over its range. On a greyscale
    photo ``saturation`` has no visible effect, so its recorded strength is 0 there.

    Args:
        photos (`Sequence[Photo]`): Source photographs (see [`load_photos`]).
        num_images (`int`), image_size (`int`): How many square images, of which side in pixels.
        seed (`int`): Seed; the random stream also depends on ``id_prefix``.
        id_prefix (`str`): Prefix of the image ids (``"<prefix>-00000"``).
    """
    if isinstance(photos, (str, bytes)) or not photos or not all(isinstance(p, Photo) for p in photos):
        raise InputTypeError(
            f"photos must be a non-empty sequence of Photo (see load_photos), received {photos!r:.80}"
        )
    _check_count("num_images", num_images)
    _check_count("image_size", image_size, minimum=16)
    _check_strengths(dict.fromkeys(always, 0.0))
    if not 0.0 <= p_active <= 1.0:
        raise InputError(f"p_active must lie in [0, 1], received {p_active!r}")
    rng = _stream(seed, id_prefix)
    active = rng.random((num_images, len(TRAIT_NAMES))) < p_active
    active[:, [TRAIT_NAMES.index(name) for name in always]] = True
    uniform = _LOW + (_HIGH - _LOW) * rng.random((num_images, len(TRAIT_NAMES)))
    strengths = np.where(active, uniform, 0.0).astype(np.float32)
    order = rng.permutation(np.resize(np.arange(len(photos)), num_images))
    sources = [photo.downscaled(2 * image_size).image for photo in photos]  # enough for the smallest crop
    png = []
    for index, photo_index in enumerate(order):
        source = sources[photo_index]
        side = round(min(source.size) * rng.uniform(0.6, 1.0))
        left, top = int(rng.integers(0, source.width - side + 1)), int(rng.integers(0, source.height - side + 1))
        image = source.crop((left, top, left + side, top + side)).resize((image_size,) * 2, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if photos[photo_index].greyscale:
            strengths[index, TRAIT_NAMES.index("saturation")] = 0.0
        image = apply_traits(image, dict(zip(TRAIT_NAMES, strengths[index].tolist())), int(rng.integers(2**31)))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)  # lossless; level 1 is fast
        png.append(buffer.getvalue())
    return Pool(
        image_ids=[f"{id_prefix}-{index:05d}" for index in range(num_images)],
        png=png,
        strengths=strengths,
        photo_names=[photos[index].name for index in order],
    )


# ------------------------------------------------------------------------------------------- databases
@dataclass(frozen=True)
class SimulatedDatabase:
    """A simulated rating database: a linear criterion over trait strengths, voted on 1..10.

    Args:
        name (`str`), description (`str`): Its name, and one line for bank metadata and cards.
        kind (`str`): ``"iqa"`` (technical quality) or ``"giaa"`` (generic aesthetics).
        weights (`Mapping[str, float]`): Criterion weights per trait; traits left out do not count.
        score_range (`tuple[float, float]`): Range of the mean opinion score.
    """

    name: str
    kind: str
    weights: Mapping[str, float]
    description: str
    score_range: tuple[float, float] = (1.0, 10.0)

    def criterion(self, strengths: np.ndarray) -> np.ndarray:
        """The noise-free criterion of images with these ``[N, T]`` strengths, scaled to [0, 1]."""
        strengths = np.asarray(strengths, dtype=np.float64)
        if strengths.ndim != 2 or strengths.shape[1] != len(TRAIT_NAMES):
            raise InputError(f"strengths must have shape [N, {len(TRAIT_NAMES)}], received {strengths.shape}")
        w = np.array([self.weights.get(name, 0.0) for name in TRAIT_NAMES])
        lowest, highest = np.minimum(w * _LOW, w * _HIGH).sum(), np.maximum(w * _LOW, w * _HIGH).sum()
        return (strengths @ w - lowest) / (highest - lowest)

    def metadata(self) -> dict:
        """Description usable as bank task metadata."""
        return {
            "database": f"simulated-{self.name}",
            "kind": self.kind,
            "score_range": list(self.score_range),
            "description": self.description,
            "criterion": dict(self.weights),
            "licence": "simulated from real photographs; see the package NOTICE for the photos' licences",
        }


SIMULATED_DATABASES: dict[str, SimulatedDatabase] = {
    database.name: database
    for database in (
        SimulatedDatabase("sharpness", "iqa", {"sharpness": 1.0}, "rewards sharp images, penalises blur"),
        SimulatedDatabase("noise", "iqa", {"noise": -1.0}, "penalises sensor noise"),
        SimulatedDatabase("jpeg", "iqa", {"jpeg": -1.0}, "penalises JPEG compression artefacts"),
        SimulatedDatabase("exposure", "iqa", {"exposure": 1.0}, "rewards bright exposure, penalises dark images"),
        SimulatedDatabase("saturation", "giaa", {"saturation": 1.0}, "rewards vivid colours"),
        SimulatedDatabase("contrast", "giaa", {"contrast": 1.0}, "rewards punchy contrast"),
        SimulatedDatabase(
            "general",
            "giaa",
            {"sharpness": 0.3, "noise": -0.15, "jpeg": -0.1, "exposure": 0.15, "saturation": 0.15, "contrast": 0.15},
            "generic aesthetics: a fixed mix of sharpness, cleanliness, exposure, colour and contrast",
        ),
    )
}
"""The simulated databases by name. No database covers ``warmth``."""

NUM_VOTES, VOTE_STD = 25, 1.3


def _database(name: str) -> SimulatedDatabase:
    if name not in SIMULATED_DATABASES:
        raise InputError(f"unknown simulated database {name!r}; expected one of {list(SIMULATED_DATABASES)}")
    return SIMULATED_DATABASES[name]


def score_database(name: str, pool: Pool, seed: int) -> Dataset:
    """Score images by a database's criterion: mean opinion ``1.5 + 8 * criterion``, 25 voters adding noise.

    Returns:
        `datasets.Dataset`: Columns ``image``, ``score`` (float32 mean vote, 1..10), ``score_distribution``
        (10 float32 vote fractions for 1..10) and ``image_id``.
    """
    mean = 1.5 + 8.0 * _database(name).criterion(pool.strengths)
    noise = _stream(seed, name, "votes").normal(0.0, VOTE_STD, (len(pool), NUM_VOTES))
    votes = np.clip(np.rint(mean[:, None] + noise), 1, 10).astype(int)
    histogram = (votes[..., None] == np.arange(1, 11)).mean(axis=1, dtype=np.float64)
    return _dataset(
        {
            "image": pool._image_column(),
            "score": votes.mean(axis=1).astype(np.float32),
            "score_distribution": histogram.astype(np.float32),
            "image_id": list(pool.image_ids),
        }
    )


def make_database(name: str, photos: Sequence[Photo], num_images: int, image_size: int, seed: int) -> Dataset:
    """Render and score one simulated database of :data:`SIMULATED_DATABASES` (see [`make_pool`] and
    [`score_database`]); every image carries random strengths of all traits, and always the database's own."""
    return score_database(name, _database_images(name, photos, num_images, image_size, seed), seed)


def _database_images(name: str, photos: Sequence[Photo], num_images: int, image_size: int, seed: int) -> Pool:
    return make_pool(photos, num_images, image_size, seed, always=tuple(_database(name).weights), id_prefix=name)


# ----------------------------------------------------------------------------------------------- raters
@dataclass(frozen=True)
class SimulatedUser:
    """A simulated rater whose noise-free utility is ``sum(taste[t] * strength[t])``.

    Args:
        user_id (`str`): Rater id.
        taste (`dict[str, float]`): Weight per trait, positive (likes more of it) or negative.
        noise (`float`): Standard deviation of the rater's noise on the 1..5 scale.
    """

    user_id: str
    taste: dict[str, float]
    noise: float = 0.45

    def __post_init__(self) -> None:
        _check_strengths(dict.fromkeys(self.taste, 0.0))
        if not any(self.taste.values()):
            raise InputError(f"taste of {self.user_id!r} must have a non-zero weight, received {self.taste}")
        if not self.noise >= 0:
            raise InputError(f"noise must be >= 0, received {self.noise!r}")

    def utility(self, strengths: np.ndarray) -> np.ndarray:
        """Noise-free utility of images with these ``[N, T]`` strengths."""
        return np.asarray(strengths, dtype=np.float64) @ np.array([self.taste.get(n, 0.0) for n in TRAIT_NAMES])

    def describe(self) -> str:
        """The taste in words, strongest first, e.g. ``"likes sharp (0.62), clean (0.25)"``."""
        ranked = sorted(self.taste.items(), key=lambda item: -abs(item[1]))
        words = [f"{TRAITS[n].positive if w > 0 else TRAITS[n].negative} ({abs(w):.2f})" for n, w in ranked if w]
        return "likes " + ", ".join(words)


def make_users(n: int, seed: int) -> list[SimulatedUser]:
    """Draw ``n`` raters. Each has a main trait (all traits in turn, in a seeded order, so ``warmth`` too)
    weighing 1, the way the databases reward with probability 0.75 and the other way otherwise, plus one or two
    secondary traits weighing 0.25-0.6; the weights are then scaled to sum to 1 in absolute value."""
    _check_count("n", n)
    rng = _stream(seed, "users")
    rewarded = {name: float(np.sign(w)) for db in SIMULATED_DATABASES.values() for name, w in db.weights.items()}
    order = [TRAIT_NAMES[i] for i in rng.permutation(len(TRAIT_NAMES))]
    users = []
    for index in range(n):
        main = order[index % len(order)]
        taste = {main: rewarded.get(main, 1.0) * (1.0 if rng.random() < 0.75 else -1.0)}
        others = [name for name in TRAIT_NAMES if name != main]
        for name in rng.choice(others, size=int(rng.integers(1, 3)), replace=False):
            sign = 1.0 if rng.random() < 0.8 else -1.0
            taste[str(name)] = rewarded.get(str(name), 1.0) * sign * float(rng.uniform(0.25, 0.6))
        total = sum(abs(w) for w in taste.values())
        taste = {name: round(w / total, 3) for name, w in taste.items()}
        users.append(SimulatedUser(f"user-{index:02d}", taste, noise=round(float(rng.uniform(0.3, 0.6)), 2)))
    return users


def rate(user: SimulatedUser, pool: Pool, seed: int) -> Dataset:
    """The rater's scores of every pool image, in pool order: the utility is standardised over the pool, then
    ``3 + z + noise`` is rounded to halves and clipped to 1..5.

    Returns:
        `datasets.Dataset`: Columns ``image``, ``score`` (float32, 1..5 in steps of 0.5), ``user_id``, ``image_id``.
    """
    if not isinstance(user, SimulatedUser):
        raise InputTypeError(f"user must be a SimulatedUser, received {type(user).__name__}")
    utility = user.utility(pool.strengths)
    if len(pool) < 2 or utility.std() == 0:
        raise InputError(
            f"the pool of {len(pool)} images does not vary in {user.user_id}'s traits; "
            "expected images with different strengths"
        )
    z = (utility - utility.mean()) / utility.std()
    noisy = 3.0 + z + _stream(seed, user.user_id, "ratings").normal(0.0, user.noise, len(pool))
    scores = np.clip(np.rint(noisy * 2.0) / 2.0, 1.0, 5.0).astype(np.float32)
    return _dataset(
        {
            "image": pool._image_column(),
            "score": scores,
            "user_id": [user.user_id] * len(pool),
            "image_id": list(pool.image_ids),
        }
    )


def noise_ceiling(user: SimulatedUser, pool: Pool, ratings: Dataset) -> float:
    """SROCC between a rater's noisy ratings (from [`rate`]) and their noise-free utility: the best any model
    can reach on these ratings."""
    if list(ratings["image_id"]) != list(pool.image_ids):
        raise InputError("ratings must list the pool's images in pool order, as rate() returns them")
    return float(spearmanr(ratings["score"], user.utility(pool.strengths)).statistic)


# ------------------------------------------------------------------------------------------------ world
@dataclass
class World:
    """A built world: databases to fine-tune a bank on, and raters who rate one shared pool.

    Args:
        config ([`WorldConfig`]): What was built.
        photos (`list[Photo]`): The photographs used.
        databases (`dict[str, datasets.Dataset]`): Simulated databases by name (see [`score_database`]).
        database_strengths (`dict[str, np.ndarray]`): Trait strengths of each database's images, in row order.
        pool ([`Pool`]), users (`list[SimulatedUser]`): The shared images, and the raters who all rate them.
        ratings (`dict[str, datasets.Dataset]`): Each rater's ratings of the pool, by user id, in pool order.
    """

    config: WorldConfig
    photos: list[Photo]
    databases: dict[str, Dataset]
    database_strengths: dict[str, np.ndarray]
    pool: Pool
    users: list[SimulatedUser]
    ratings: dict[str, Dataset]

    def user(self, user_id: str) -> SimulatedUser:
        """The rater with this id."""
        for user in self.users:
            if user.user_id == user_id:
                return user
        raise InputError(f"unknown user {user_id!r}; expected one of {[user.user_id for user in self.users]}")

    def noise_ceiling(self, user_id: str) -> float:
        """SROCC of a rater's noisy ratings against their noise-free utility."""
        return noise_ceiling(self.user(user_id), self.pool, self.ratings[user_id])


def build_world(config: WorldConfig | None = None) -> World:
    """Build the simulated world: photos, databases, the shared pool, raters and their ratings.

    Args:
        config ([`WorldConfig`], *optional*): Size and seed; the default preset when omitted.

    Returns:
        [`World`]: Identical for identical configs (and installed photo packages).
    """
    config = WorldConfig() if config is None else config
    if not isinstance(config, WorldConfig):
        raise InputTypeError(f"config must be a WorldConfig, received {type(config).__name__}")
    start = time.perf_counter()
    photos = load_photos(config.num_photos)
    sources = [photo.downscaled(2 * config.image_size) for photo in photos]  # once, not once per database
    databases, strengths = {}, {}
    for name in config.databases:
        images = _database_images(name, sources, config.images_per_database, config.image_size, config.seed)
        databases[name] = score_database(name, images, config.seed)
        strengths[name] = images.strengths
    pool = make_pool(sources, config.pool_size, config.image_size, config.seed, id_prefix="pool")
    users = make_users(config.num_users, config.seed)
    ratings = {user.user_id: rate(user, pool, config.seed) for user in users}
    logger.info(
        "Built %d databases x %d images, a pool of %d images and %d raters from %d photos in %.1f s",
        len(databases),
        config.images_per_database,
        len(pool),
        len(users),
        len(photos),
        time.perf_counter() - start,
    )
    return World(config, photos, databases, strengths, pool, users, ratings)
