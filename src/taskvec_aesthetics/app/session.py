"""One visitor's state: their ratings, uploads and personalized model. The page holds one per browser session.

Everything here is plain Python (no web framework), so the whole flow can be driven and tested without a browser:
rate, skip, upload, personalize, rank, export, push. Bad input raises `ValueError` with a message meant for the page.
"""

from __future__ import annotations

import csv
import logging
import math
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics import srocc
from ..modeling import AestheticModel
from ..personalization import EncodedRatings, PersonalizationReport
from ..selection import choose_next
from .photos import PhotoError, open_photo, store_photo
from .resources import AppResources

__all__ = ["DEFAULT_STRATEGY", "USEFUL_RATINGS", "Personalized", "RatingSession", "cv_estimate"]

logger = logging.getLogger(__name__)

#: How photos to rate are chosen. Random: on the demo's simulated raters the greedy D-optimal design measured no
#: better (benchmarks/results/active_selection.md), so the app does not use it.
DEFAULT_STRATEGY = "random"
#: Ratings after which each further rating pays off about half as much on the demo's simulated raters (same benchmark).
USEFUL_RATINGS = 20
STARS = (1, 2, 3, 4, 5)


def cv_estimate(report: PersonalizationReport) -> tuple[float, float, str] | None:
    """The cross-validated estimate of the user's SROCC, its standard error and how it was made; ``None`` when
    there were too few ratings to cross-validate."""
    if report.cv_srocc is None or report.cv_srocc_se is None:
        return None
    how = f"{report.folds}-fold cross-validation on your {report.num_ratings} ratings"
    return float(report.cv_srocc), float(report.cv_srocc_se), how


@dataclass
class Personalized:
    """A fit: the model, its report, scores of every photo, and the files to download."""

    model: AestheticModel
    report: PersonalizationReport
    scores: np.ndarray
    seconds: float
    model_zip: Path
    ratings_csv: Path


class RatingSession:
    """One visitor's ratings of the shared pool plus their own uploads, and their personalized model.

    Args:
        resources ([`AppResources`]): The shared base, bank and pool.
        strategy (`str`): How the next photo is chosen (see `taskvec_aesthetics.selection`).
        useful (`int`): Ratings after which the page says more help little.
    """

    def __init__(self, resources: AppResources, strategy: str = DEFAULT_STRATEGY, useful: int = USEFUL_RATINGS):
        self.resources = resources
        self.strategy = strategy
        self.useful = useful
        self.seed = secrets.randbits(31)  # each visitor gets their own random order
        self.ratings: dict[int, float] = {}
        self.skipped: set[int] = set()
        self.workdir = Path(tempfile.mkdtemp(prefix="taskvec-aesthetics-app-"))
        self.uploads: list[Path] = []
        self._upload_prefix: torch.Tensor | None = None
        self._upload_task_scores = np.zeros((len(resources.bank), 0))
        self._upload_base_scores = np.zeros(0)
        self.result: Personalized | None = None
        self.current: int | None = None
        self.advance()

    # -- the pool ------------------------------------------------------------------------------------------------
    @property
    def photos(self) -> list[Path]:
        """Every photo this visitor can rate: the shared pool, then their uploads."""
        return self.resources.photos + self.uploads

    def task_scores(self) -> np.ndarray:
        return np.concatenate([self.resources.task_scores, self._upload_task_scores], axis=1)

    def base_scores(self) -> np.ndarray:
        return np.concatenate([self.resources.base_scores, self._upload_base_scores])

    def prefix(self, index: Sequence[int] | np.ndarray) -> torch.Tensor:
        index = torch.as_tensor(np.asarray(index, dtype=np.int64))
        pool = self.resources.prefix
        if self._upload_prefix is None:
            return pool[index]
        return torch.cat([pool, self._upload_prefix])[index]

    def name(self, index: int) -> str:
        """The photo's file name, as the ratings CSV writes it."""
        return self.photos[index].name

    # -- rating ----------------------------------------------------------------------------------------------------
    def advance(self) -> int | None:
        """Choose the next photo to show (``None`` once every photo was rated or skipped)."""
        chosen = choose_next(self.task_scores(), set(self.ratings) | self.skipped, 1, self.strategy, self.seed)
        self.current = chosen[0] if chosen else None
        return self.current

    def rate(self, stars: Any) -> None:
        """Rate the photo on screen with 1-5 stars and move on."""
        if self.current is None:
            raise ValueError("There is no photo left to rate: upload more photos, or press Personalize.")
        try:
            value = float(stars)
        except (TypeError, ValueError):
            raise ValueError(f"A rating is 1 to 5 stars; received {stars!r}.") from None
        if value not in STARS:
            raise ValueError(f"A rating is 1 to 5 stars; received {stars!r}.")
        self.ratings[self.current] = value
        self.advance()

    def skip(self) -> None:
        """Leave the photo on screen unrated and move on."""
        if self.current is not None:
            self.skipped.add(self.current)
        self.advance()

    def progress(self) -> str:
        """How far the visitor is, and how many more ratings are useful."""
        n = len(self.ratings)
        if n == 0:
            return f"Rate photos from 1 to 5 stars. About {self.useful} ratings make a good model."
        rated = f"{n} rated"
        if n < self.useful:
            more = self.useful - n
            return f"{rated} · {more} more {'is' if more == 1 else 'are'} useful · you can personalize at any time"
        return f"{rated} · enough for a good model; more ratings still help a little"

    # -- uploads --------------------------------------------------------------------------------------------------
    def add_uploads(self, files: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
        """Add uploaded photos to this visitor's pool (they are offered for rating and ranked).

        Returns:
            `list[str]`: One message per refused file; the others were added.
        """
        if not files:
            raise ValueError("No photos received: choose one or more JPEG, PNG or WebP files.")
        problems, stored, images = [], [], []
        for i, file in enumerate(files):
            try:
                path = store_photo(file, self.workdir / "uploads", names[i] if names else None)
            except PhotoError as error:
                problems.append(str(error))
                continue
            stored.append(path)
            images.append(open_photo(path))
        if images:
            prefix, task_scores, base_scores = self.resources.encode(images)
            self._upload_prefix = prefix if self._upload_prefix is None else torch.cat([self._upload_prefix, prefix])
            self._upload_task_scores = np.concatenate([self._upload_task_scores, task_scores], axis=1)
            self._upload_base_scores = np.concatenate([self._upload_base_scores, base_scores])
            self.uploads.extend(stored)
            if self.current is None:
                self.advance()
        return problems

    # -- personalizing ----------------------------------------------------------------------------------------------
    def check_ratings(self) -> None:
        """Raise a message for the page when the ratings cannot teach an order yet."""
        values = list(self.ratings.values())
        if not values:
            raise ValueError("Rate a few photos first: personalization learns from your ratings.")
        if len(values) == 1:
            raise ValueError("One rating cannot show what you prefer: rate at least one more photo, differently.")
        if len(set(values)) == 1:
            raise ValueError(
                f"All {len(values)} of your ratings are {values[0]:g} stars, so they show no preference: give the "
                "photos you like more stars than the ones you like less."
            )

    def personalize(self) -> Personalized:
        """Fit this visitor's coefficients, score every photo, and write the model and ratings downloads."""
        self.check_ratings()
        began = time.perf_counter()
        rated = sorted(self.ratings)
        personalizer = self.resources.personalizer
        encoded = EncodedRatings(self.prefix(rated), torch.tensor([self.ratings[i] for i in rated]))
        with self.resources.lock:
            coefficients, report = personalizer.fit_encoded(encoded)
            scores = personalizer.predict(coefficients, self.prefix(range(len(self.photos)))).numpy()
        model = self.resources.base.with_coefficients(self.resources.bank, coefficients, info=report.summary())
        folder = self.workdir / f"model-{len(rated)}-ratings"
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder / "my-aesthetic-model", export="coefficients")
        archive = Path(shutil.make_archive(str(folder / "my-aesthetic-model"), "zip", folder, "my-aesthetic-model"))
        self.result = Personalized(
            model, report, scores, time.perf_counter() - began, archive, self.write_ratings_csv()
        )
        return self.result

    def ranking(self, scores: np.ndarray, limit: int = 24) -> list[tuple[Path, str]]:
        """The unrated photos, best first by ``scores``: (file, caption) pairs."""
        unrated = [i for i in range(len(self.photos)) if i not in self.ratings]
        best = sorted(unrated, key=lambda i: -scores[i])[:limit]
        return [(self.photos[i], f"#{rank + 1} · {scores[i]:.2f}") for rank, i in enumerate(best)]

    def agreement(self) -> float | None:
        """SROCC between the personalized and the base model's scores on the unrated photos."""
        if self.result is None:
            return None
        unrated = [i for i in range(len(self.photos)) if i not in self.ratings]
        if len(unrated) < 3:
            return None
        value = srocc(self.result.scores[unrated], self.base_scores()[unrated])
        return None if math.isnan(value) else float(value)

    def task_weights(self) -> dict[str, float]:
        """Mean coefficient of each task of the bank: which databases this taste draws on."""
        if self.result is None:
            return {}
        return self.result.report.coefficients.task_weights()

    # -- files and sharing --------------------------------------------------------------------------------------------
    def write_ratings_csv(self) -> Path:
        """The ratings as a CSV that `taskvec_aesthetics.data.load_ratings` reads (`file_name,score`; put it next to
        the photos, or name it `metadata.csv` in their folder)."""
        path = self.workdir / "my-ratings.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "score"])
            for index in sorted(self.ratings):
                writer.writerow([self.name(index), f"{self.ratings[index]:g}"])
        return path

    def push(self, repo_id: str, token: str, export: str = "merged") -> str:
        """Push the personalized model to the Hub; returns the commit url."""
        if self.result is None:
            raise ValueError("Personalize first: there is no model to push yet.")
        repo_id, token = (repo_id or "").strip(), (token or "").strip()
        if not repo_id or repo_id.count("/") > 1:
            raise ValueError(f"Enter a repository id like 'your-name/my-aesthetic-model'; received {repo_id!r}.")
        if not token:
            raise ValueError("Paste a Hugging Face access token with write permission (hf.co/settings/tokens).")
        commit = self.result.model.push_to_hub(repo_id, export=export, token=token)
        return str(getattr(commit, "commit_url", commit))

    def close(self) -> None:
        """Delete this visitor's files."""
        shutil.rmtree(self.workdir, ignore_errors=True)
