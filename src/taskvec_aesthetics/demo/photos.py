"""Real photographs for the offline demo, found in installed packages or shipped with this one.

No aesthetics database ships with a Python package, and nothing may be downloaded when the demo runs, so
the demo builds its images from real photographs that install with ``pip``:

* scikit-image's sample photos that are inside its wheel (not the ones it fetches on demand),
* scikit-learn's two sample images and matplotlib's ``grace_hopper.jpg``,
* four redistributable photos in ``taskvec_aesthetics/demo/assets`` (downscaled), taken from SciPy 1.9's
  ``scipy.misc`` sample data and from the Kivy examples package; see ``NOTICE``.

That makes 21 distinct photographs (14 in colour, 7 greyscale ones converted to RGB). To give the simulated
databases more variety, 13 fixed, distinct crops of the largest colour photos follow them; each crop is named
after its source (``"hubble_deep_field/crop-1"``) and keeps its origin and licence, so nothing pretends to be
a separate photograph. The catalogue order is fixed: colour photos, then greyscale photos, then crops, so
``load_photos(limit=n)`` is deterministic and prefers colour.

Photos from a package that is not installed are skipped with a log message; the demo extra
(``pip install taskvec-aesthetics[demo]``) installs all of them.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from ..errors import InputError

__all__ = ["NUM_DISTINCT_PHOTOS", "PHOTO_SOURCES", "Photo", "PhotoSource", "load_photos"]

logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PhotoSource:
    """Where one photograph comes from.

    Args:
        name (`str`): Unique name, e.g. ``"chelsea"`` or ``"retina/crop-1"`` for a crop.
        origin (`str`): Human-readable provenance: package, file and photographer or archive.
        licence (`str`): Licence or copyright status of the photograph.
        package (`str`): Top-level package holding the file, or ``"taskvec_aesthetics"`` for the shipped assets.
        file (`str`): Path of the file inside that package.
        box (`tuple[float, float, float, float]`, *optional*): Crop as fractions ``(left, top, right, bottom)``
            of the full photograph; ``None`` keeps all of it.
    """

    name: str
    origin: str
    licence: str
    package: str
    file: str
    box: Box | None = None

    def path(self) -> Path | None:
        """The file's location, or ``None`` when its package is not installed."""
        if self.package == "taskvec_aesthetics":
            return ASSETS_DIR / self.file
        spec = importlib.util.find_spec(self.package)  # locates a top-level package without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        return path if path.is_file() else None


@dataclass
class Photo:
    """A loaded photograph.

    Args:
        name (`str`): The source's unique name.
        image (`PIL.Image.Image`): The photograph in RGB mode.
        origin (`str`): Provenance, as in [`PhotoSource`].
        licence (`str`): Licence, as in [`PhotoSource`].
        greyscale (`bool`): Whether the original is a greyscale photograph (converted to RGB): colour
            changes such as saturation have no visible effect on it.
    """

    name: str
    image: Image.Image
    origin: str
    licence: str
    greyscale: bool = False

    def downscaled(self, short_side: int) -> Photo:
        """This photo with its shorter side reduced to ``short_side`` pixels (never enlarged)."""
        if min(self.image.size) <= short_side:
            return self
        image = self.image.copy()
        image.thumbnail((short_side * max(image.size) // min(image.size),) * 2, Image.Resampling.LANCZOS)
        return replace(self, image=image)


def _skimage(name: str, file: str, credit: str, licence: str, box: Box | None = None) -> PhotoSource:
    return PhotoSource(name, f"scikit-image sample data ({file}); {credit}", licence, "skimage", f"data/{file}", box)


def _asset(name: str, file: str, origin: str, licence: str, box: Box | None = None) -> PhotoSource:
    return PhotoSource(
        name, f"taskvec-aesthetics demo asset ({file}); {origin}", licence, "taskvec_aesthetics", file, box
    )


_CC_BY_2 = "CC BY 2.0"
_RETINA_BOX = (0.2, 0.2, 0.8, 0.8)  # the fundus photo is a disc on black: keep its inside

_DISTINCT: tuple[PhotoSource, ...] = (
    # Colour photographs.
    _skimage("astronaut", "astronaut.png", "Eileen Collins, NASA Great Images", "public domain"),
    _skimage("chelsea", "chelsea.png", "photo by Stefan van der Walt", "CC0"),
    _skimage("coffee", "coffee.png", "photo by Rachel Michetti", "CC0"),
    _skimage("rocket", "rocket.jpg", "DSCOVR launch on Falcon 9, SpaceX", "public domain"),
    _skimage(
        "motorcycle",
        "motorcycle_left.png",
        "Middlebury 2014 stereo data set (Scharstein et al.)",
        "as redistributed by scikit-image (BSD-3-Clause package)",
    ),
    _skimage("hubble_deep_field", "hubble_deep_field.jpg", "NASA / Hubble Space Telescope", "public domain"),
    _skimage(
        "immunohistochemistry",
        "ihc.png",
        "Center for Microscopy and Molecular Imaging",
        "no known copyright restrictions",
    ),
    _skimage("retina", "retina.jpg", "fundus photograph by Mikael Haggstrom", "CC0", _RETINA_BOX),
    PhotoSource(
        "china",
        "scikit-learn sample image (datasets/images/china.jpg); photo by danielbuechele (Flickr)",
        _CC_BY_2,
        "sklearn",
        "datasets/images/china.jpg",
    ),
    PhotoSource(
        "flower",
        "scikit-learn sample image (datasets/images/flower.jpg); photo by vultilion (Flickr)",
        _CC_BY_2,
        "sklearn",
        "datasets/images/flower.jpg",
    ),
    PhotoSource(
        "grace_hopper",
        "matplotlib sample data (mpl-data/sample_data/grace_hopper.jpg); US Navy photo",
        "public domain",
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
    ),
    _asset(
        "raccoon",
        "scipy_face.jpg",
        "raccoon face from SciPy 1.9 scipy.misc.face (public-domain-image.com)",
        "public domain",
    ),
    _asset("city", "kivy_city.jpg", "frame of cityCC0 from the Kivy examples package", "CC0"),
    _asset(
        "faust",
        "kivy_faust.jpg",
        "faust_github.jpg from the Kivy examples package",
        "MIT (Kivy Team and other contributors)",
    ),
    # Greyscale photographs, converted to RGB.
    _skimage("camera", "camera.png", "photo by Lav Varshney", "CC0"),
    _skimage("coins", "coins.png", "Greek coins from Pompeii, Brooklyn Museum", "no known copyright restrictions"),
    _skimage("moon", "moon.png", "surface of the moon", "as redistributed by scikit-image (BSD-3-Clause package)"),
    _skimage("brick", "brick.png", "CC0Textures Bricks25", "CC0"),
    _skimage("grass", "grass.png", "CC0Textures Grass", "CC0"),
    _skimage("gravel", "gravel.png", "CC0Textures Gravel04", "CC0"),
    _asset("ascent", "scipy_ascent.jpg", "SciPy 1.9 scipy.misc.ascent (public-domain-image.com)", "public domain"),
)

# Fixed crops of the largest colour photos: (source name, box) pairs, each a different region.
_CROPS: tuple[tuple[str, Box], ...] = (
    ("hubble_deep_field", (0.0, 0.0, 0.5, 0.57)),
    ("hubble_deep_field", (0.5, 0.43, 1.0, 1.0)),
    ("retina", (0.3, 0.25, 0.6, 0.55)),
    ("grace_hopper", (0.15, 0.05, 0.85, 0.65)),
    ("motorcycle", (0.0, 0.0, 0.55, 0.8)),
    ("motorcycle", (0.45, 0.2, 1.0, 1.0)),
    ("raccoon", (0.25, 0.0, 0.85, 0.8)),
    ("coffee", (0.1, 0.05, 0.7, 0.95)),
    ("china", (0.35, 0.0, 1.0, 1.0)),
    ("flower", (0.0, 0.0, 0.65, 1.0)),
    ("rocket", (0.3, 0.0, 0.8, 0.75)),
    ("astronaut", (0.0, 0.0, 0.6, 0.6)),
    ("city", (0.0, 0.0, 0.6, 1.0)),
)


def _crop_sources() -> tuple[PhotoSource, ...]:
    by_name = {source.name: source for source in _DISTINCT}
    counts: dict[str, int] = {}
    crops = []
    for name, box in _CROPS:
        counts[name] = counts.get(name, 0) + 1
        source = by_name[name]
        crops.append(
            PhotoSource(
                f"{name}/crop-{counts[name]}",
                f"crop of {source.origin}",
                source.licence,
                source.package,
                source.file,
                box,
            )
        )
    return tuple(crops)


PHOTO_SOURCES: tuple[PhotoSource, ...] = _DISTINCT + _crop_sources()
"""Every photograph the demo can use, in load order."""

NUM_DISTINCT_PHOTOS = len(_DISTINCT)
"""Number of distinct photographs (not counting crops) when all demo packages are installed."""


def _crop(image: Image.Image, box: Box | None) -> Image.Image:
    if box is None:
        return image
    width, height = image.size
    left, top, right, bottom = box
    return image.crop((round(left * width), round(top * height), round(right * width), round(bottom * height)))


def _load(source: PhotoSource, path: Path) -> Photo:
    with Image.open(path) as opened:
        greyscale = opened.mode in ("1", "L", "LA", "I", "I;16", "F")
        image = _crop(opened.convert("RGB"), source.box)
    return Photo(source.name, image, source.origin, source.licence, greyscale)


def load_photos(limit: int | None = None) -> list[Photo]:
    """Load the demo's real photographs, in the fixed order of [`PHOTO_SOURCES`].

    Args:
        limit (`int`, *optional*): Return at most this many photos (the first ones: colour photos come first).

    Returns:
        `list[Photo]`: RGB photographs; those whose package is not installed are skipped.

    Raises:
        `ValueError`: If ``limit`` is not positive, or no photo can be found.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, received {limit!r}")
    photos: list[Photo] = []
    missing: set[str] = set()
    for source in PHOTO_SOURCES:
        if limit is not None and len(photos) >= limit:
            break
        path = source.path()
        if path is None:
            missing.add(source.package)
            continue
        photos.append(_load(source, path))
    if missing:
        logger.info(
            "Skipped the demo photos of %s: not installed (pip install taskvec-aesthetics[demo])",
            ", ".join(sorted(missing)),
        )
    if not photos:
        raise InputError(
            f"found no demo photos: the packages {sorted(missing)} are not installed; "
            "expected them from the demo extra (pip install taskvec-aesthetics[demo])"
        )
    return photos
