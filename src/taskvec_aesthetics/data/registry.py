"""Registry of the public image aesthetics and quality databases the library can load.

Every database is described once, by a frozen [`DatabaseSpec`] in the `DATABASES` dict literal below. The
spec is what the rest of the library reads when it needs to know a database's score scale, whether it carries
vote histograms, or whether it is a personalised (per-user) database.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import InputError, InputTypeError

__all__ = ["DATABASES", "DatabaseKind", "DatabaseSpec", "get_database_spec", "list_databases"]

logger = logging.getLogger(__name__)

DatabaseKind = Literal["iqa", "giaa", "piaa"]
_KINDS = ("iqa", "giaa", "piaa")


@dataclass(frozen=True)
class DatabaseSpec:
    """Static description of one image aesthetics / quality database.

    Args:
        name (`str`):
            Canonical identifier, lower case with hyphens (e.g. `"koniq10k"`, `"flickr-aes"`).
        display_name (`str`):
            Name as written in papers (e.g. `"KonIQ-10k"`).
        kind (`str`):
            `"iqa"` (technical image quality), `"giaa"` (generic aesthetics, one mean score per image) or
            `"piaa"` (personalised aesthetics: individual ratings with user ids).
        score_range (`tuple[float, float]`):
            `(low, high)` of the `score` column as the loaders return it, on the database's own scale.
        higher_is_better (`bool`):
            Whether a higher score means a better image.
        size (`int`):
            Nominal number of images reported by the authors (the files may hold a few fewer).
        distribution_bins (`tuple[float, ...]`, *optional*):
            Score value of each bin of the `score_distribution` column, for databases that publish vote
            histograms; `None` otherwise.
        num_users (`int`, *optional*):
            Number of raters with released individual ratings (personalised databases).
        licence (`str`):
            Short note on the terms of use; the homepage has the authoritative text.
        citation (`str`):
            Reference to cite when using the database.
        homepage (`str`, *optional*):
            Where the database is distributed.
        aliases (`tuple[str, ...]`):
            Other names accepted by [`get_database_spec`].
    """

    name: str
    display_name: str
    kind: DatabaseKind
    score_range: tuple[float, float]
    higher_is_better: bool
    size: int
    distribution_bins: tuple[float, ...] | None = None
    num_users: int | None = None
    licence: str = ""
    citation: str = ""
    homepage: str | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"DatabaseSpec.kind must be one of {_KINDS}, got {self.kind!r}.")
        low, high = self.score_range
        if not low < high:
            raise InputError(f"DatabaseSpec.score_range must be (low, high) with low < high, got {self.score_range}.")

    @property
    def has_distribution(self) -> bool:
        """Whether the database publishes per-image vote histograms (`score_distribution` column)."""
        return self.distribution_bins is not None

    @property
    def has_users(self) -> bool:
        """Whether the database releases individual ratings with user ids."""
        return self.kind == "piaa"


_RESEARCH_ONLY = "Non-commercial research use only; images remain under their owners' copyright."

DATABASES: dict[str, DatabaseSpec] = {
    "ava": DatabaseSpec(
        name="ava",
        display_name="AVA",
        kind="giaa",
        score_range=(1.0, 10.0),
        higher_is_better=True,
        size=255_530,
        distribution_bins=tuple(float(i) for i in range(1, 11)),
        licence=_RESEARCH_ONLY + " Images come from dpchallenge.com.",
        citation=(
            "Murray, N., Marchesotti, L., Perronnin, F. AVA: A large-scale database for aesthetic visual "
            "analysis. CVPR 2012."
        ),
        homepage="https://github.com/imfing/ava_downloader",
    ),
    "aadb": DatabaseSpec(
        name="aadb",
        display_name="AADB",
        kind="piaa",
        score_range=(0.0, 1.0),
        higher_is_better=True,
        size=10_000,
        licence=_RESEARCH_ONLY + " Images come from Flickr.",
        citation=(
            "Kong, S., Shen, X., Lin, Z., Mech, R., Fowlkes, C. Photo aesthetics ranking network with "
            "attributes and content adaptation. ECCV 2016."
        ),
        homepage="https://github.com/aimerykong/deepImageAestheticsAnalysis",
    ),
    "tad66k": DatabaseSpec(
        name="tad66k",
        display_name="TAD66K",
        kind="giaa",
        score_range=(1.0, 10.0),
        higher_is_better=True,
        size=66_327,
        licence=_RESEARCH_ONLY,
        citation=(
            "He, S., Zhang, Y., Xie, R., Jiang, D., Ming, A. Rethinking image aesthetics assessment: models, "
            "datasets and benchmarks. IJCAI 2022."
        ),
        homepage="https://github.com/woshidandan/TANet-image-aesthetics-and-quality-assessment",
    ),
    "para": DatabaseSpec(
        name="para",
        display_name="PARA",
        kind="piaa",
        score_range=(1.0, 5.0),
        higher_is_better=True,
        size=31_220,
        distribution_bins=tuple(1.0 + 0.5 * i for i in range(9)),
        num_users=438,
        licence=_RESEARCH_ONLY + " Distributed by the authors on request.",
        citation=(
            "Yang, Y., Xu, L., Li, L., Qie, N., Li, Y., Zhang, P., Guo, Y. Personalized image aesthetics "
            "assessment with rich attributes. CVPR 2022."
        ),
        aliases=("para-iaa",),
    ),
    "koniq10k": DatabaseSpec(
        name="koniq10k",
        display_name="KonIQ-10k",
        kind="iqa",
        score_range=(0.0, 100.0),
        higher_is_better=True,
        size=10_073,
        distribution_bins=(1.0, 2.0, 3.0, 4.0, 5.0),
        licence="Images from the YFCC100M (Flickr, Creative Commons); annotations for research use.",
        citation=(
            "Hosu, V., Lin, H., Sziranyi, T., Saupe, D. KonIQ-10k: an ecologically valid database for deep "
            "learning of blind image quality assessment. IEEE TIP 2020."
        ),
        homepage="https://github.com/subpic/koniq",
        aliases=("koniq",),
    ),
    "spaq": DatabaseSpec(
        name="spaq",
        display_name="SPAQ",
        kind="iqa",
        score_range=(0.0, 100.0),
        higher_is_better=True,
        size=11_125,
        licence=_RESEARCH_ONLY,
        citation=(
            "Fang, Y., Zhu, H., Zeng, Y., Ma, K., Wang, Z. Perceptual quality assessment of smartphone "
            "photography. CVPR 2020."
        ),
        homepage="https://github.com/h4nwei/SPAQ",
    ),
    "livec": DatabaseSpec(
        name="livec",
        display_name="LIVE Challenge",
        kind="iqa",
        score_range=(0.0, 100.0),
        higher_is_better=True,
        size=1_162,
        licence=_RESEARCH_ONLY + " Distributed by LIVE, UT Austin.",
        citation=(
            "Ghadiyaram, D., Bovik, A. C. Massive online crowdsourced study of subjective and objective picture "
            "quality. IEEE TIP 2016."
        ),
        homepage="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
        aliases=("live-challenge", "clive", "live-itw", "challengedb"),
    ),
    "kadid10k": DatabaseSpec(
        name="kadid10k",
        display_name="KADID-10k",
        kind="iqa",
        score_range=(1.0, 5.0),
        higher_is_better=True,
        size=10_125,
        licence="Reference images from Pixabay; free for research use.",
        citation=(
            "Lin, H., Hosu, V., Saupe, D. KADID-10k: a large-scale artificially distorted IQA database. QoMEX 2019."
        ),
        homepage="https://database.mmsp-kn.de/kadid-10k-database.html",
        aliases=("kadid",),
    ),
    "flickr-aes": DatabaseSpec(
        name="flickr-aes",
        display_name="FLICKR-AES",
        kind="piaa",
        score_range=(1.0, 5.0),
        higher_is_better=True,
        size=40_988,
        num_users=210,
        licence=_RESEARCH_ONLY + " Images come from Flickr.",
        citation="Ren, J., Shen, X., Lin, Z., Mech, R., Foran, D. J. Personalized image aesthetics. ICCV 2017.",
        homepage="https://github.com/alanspike/personalizedImageAesthetics",
    ),
    "real-cur": DatabaseSpec(
        name="real-cur",
        display_name="REAL-CUR",
        kind="piaa",
        score_range=(1.0, 5.0),
        higher_is_better=True,
        size=2_800,
        num_users=14,
        licence=_RESEARCH_ONLY + " Personal photo albums.",
        citation="Ren, J., Shen, X., Lin, Z., Mech, R., Foran, D. J. Personalized image aesthetics. ICCV 2017.",
        homepage="https://github.com/alanspike/personalizedImageAesthetics",
    ),
    "lapis": DatabaseSpec(
        name="lapis",
        display_name="LAPIS",
        kind="piaa",
        score_range=(0.0, 100.0),
        higher_is_better=True,
        size=11_723,
        num_users=568,
        licence=_RESEARCH_ONLY + " Artworks from WikiArt; access by request to the authors.",
        citation=(
            "Maerten, A.-S., et al. LAPIS: a novel dataset for personalized image aesthetic assessment. "
            "CVPR Workshops 2025."
        ),
        homepage="https://github.com/Anne-SofieMaerten/LAPIS",
    ),
}


def _compact(name: str) -> str:
    # "KonIQ-10k", "koniq_10k" and "koniq 10k" all compact to "koniq10k".
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LOOKUP: dict[str, str] = {}
for _spec in DATABASES.values():
    for _key in (_spec.name, _spec.display_name, *_spec.aliases):
        _LOOKUP[_compact(_key)] = _spec.name


def list_databases(kind: DatabaseKind | None = None) -> list[str]:
    """Names of the registered databases, optionally only those of one kind.

    Args:
        kind (`str`, *optional*):
            `"iqa"`, `"giaa"` or `"piaa"` to filter; `None` lists all.

    Returns:
        `list[str]`: canonical names in registry order.
    """
    if kind is not None and kind not in _KINDS:
        raise InputError(f"kind must be one of {_KINDS} or None, got {kind!r}.")
    return [name for name, spec in DATABASES.items() if kind is None or spec.kind == kind]


def get_database_spec(name: str | DatabaseSpec) -> DatabaseSpec:
    """Look up a database by name, case-insensitively, ignoring hyphens, underscores and spaces.

    Args:
        name (`str` or [`DatabaseSpec`]):
            A canonical name (`"koniq10k"`), a display name (`"KonIQ-10k"`) or an alias (`"flickraes"`,
            `"live-challenge"`). A `DatabaseSpec` is returned unchanged.

    Returns:
        [`DatabaseSpec`]: the registered spec.

    Raises:
        `ValueError`: the name is unknown; the message lists the known names and the closest match.
    """
    if isinstance(name, DatabaseSpec):
        return name
    if not isinstance(name, str):
        raise InputTypeError(f"Database name must be a str, got {type(name).__name__}.")
    canonical = _LOOKUP.get(_compact(name))
    if canonical is None:
        close = difflib.get_close_matches(_compact(name), list(_LOOKUP), n=1)
        hint = f" Did you mean {_LOOKUP[close[0]]!r}?" if close else ""
        raise InputError(f"Unknown database {name!r}.{hint} Known databases: {', '.join(DATABASES)}.")
    return DATABASES[canonical]
