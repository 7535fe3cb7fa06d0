"""One visitor's state: their ratings and comparisons, uploads and personalized model. The page holds one per
browser session.

Everything here is plain Python (no web framework), so the whole flow can be driven and tested without a browser:
rate, compare, skip, upload, personalize, rank, export, push. Bad input raises `ValueError` with a message meant for
the page.

A visitor can rate photos with stars, compare two photos ("which do you prefer?"), or both. Ratings alone are fitted
as ratings; once there are comparisons, every two photos rated with different stars count as one more comparison, and
the fit learns from preferences (a Bradley-Terry loss over the pairs).
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
from PIL import Image

from ..constants import COEFFICIENTS, MERGED, PREFERRED_VALUES
from ..errors import InputError
from ..evaluation.metrics import srocc
from ..modeling import AestheticModel
from ..personalization.inputs import EncodedPreferences, EncodedRatings
from ..personalization.photo_choice import choose_next
from ..personalization.report import PersonalizationReport
from ..utils.progress import transformers_bars_off
from .files import MAX_UPLOADS
from .photos import PhotoError, open_photo, store_photo
from .resources import AppResources

__all__ = ["CHOICES", "DEFAULT_STRATEGY", "USEFUL_RATINGS", "Personalized", "RatingSession", "cv_estimate"]

logger = logging.getLogger(__name__)

#: How photos to rate are chosen. Random: on the demo's simulated raters the greedy D-optimal design measured no
#: better (benchmarks/results/active_selection.md), so the app does not use it.
DEFAULT_STRATEGY = "random"
#: Ratings after which each further rating pays off about half as much on the demo's simulated raters (same benchmark).
USEFUL_RATINGS = 20
STARS = (1, 2, 3, 4, 5)
#: Answers to "which of these two do you prefer?": the left photo, the right one, or neither.
CHOICES = tuple(PREFERRED_VALUES)


def cv_estimate(report: PersonalizationReport) -> tuple[float, tuple[float, float], str] | None:
    """The estimate of the user's SROCC on unrated photos (pair accuracy after comparisons), selection included, its
    90 % interval and how it was made; ``None`` when there were too few answers to cross-validate."""
    if report.cv_interval is None:
        return None
    if report.num_pairs and report.cv_accuracy is not None:
        how = f"{report.folds}-fold cross-validation on {report.num_pairs} pairs"
        return float(report.cv_accuracy), report.cv_interval, how
    if report.cv_srocc is None:
        return None
    how = f"{report.folds}-fold cross-validation on your {report.num_ratings} ratings"
    return float(report.cv_srocc), report.cv_interval, how


@dataclass
class Personalized:
    """A fit: its report (with the coefficients), scores of every photo, and the files to download (the model as
    ``export``, and the answers with their photos). The merged model is not kept: a session holds kilobytes."""

    report: PersonalizationReport
    scores: np.ndarray
    seconds: float
    model_zip: Path
    export: str
    answers_zip: Path


class RatingSession:
    """One visitor's ratings of the shared pool plus their own uploads, and their personalized model.

    Args:
        resources ([`AppResources`]): The shared base, bank and pool.
        strategy (`str`): How the next photo is chosen (see `taskvec_aesthetics.personalization.photo_choice`).
        useful (`int`): Ratings after which the page says more help little.
        folder (`Path`, *optional*): Where this visitor's private folder is made (the app's own temp folder; default:
            the system's).
    """

    def __init__(
        self,
        resources: AppResources,
        strategy: str = DEFAULT_STRATEGY,
        useful: int = USEFUL_RATINGS,
        folder: str | Path | None = None,
    ):
        self.resources = resources
        self.strategy = strategy
        self.useful = useful
        self.seed = secrets.randbits(31)  # each visitor gets their own random order
        self.ratings: dict[int, float] = {}
        self.comparisons: dict[tuple[int, int], str] = {}  # (left, right) -> "a", "b" or "tie"
        self.skipped: set[int] = set()
        self.workdir = Path(tempfile.mkdtemp(prefix="taskvec-aesthetics-visitor-", dir=folder))
        self.uploads: list[Path] = []
        self._upload_prefix: torch.Tensor | None = None
        self._upload_task_scores = np.zeros((len(resources.bank), 0))
        self._upload_base_scores = np.zeros(0)
        self.result: Personalized | None = None
        self.current: int | None = None
        self.current_pair: tuple[int, int] | None = None
        self.advance()
        self.advance_pair()

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
        rows = torch.as_tensor(np.asarray(index, dtype=np.int64))
        pool = self.resources.prefix
        if self._upload_prefix is None:
            return pool[rows]
        return torch.cat([pool, self._upload_prefix])[rows]

    def name(self, index: int) -> str:
        """The photo's file name, as the answers' CSV files write it (unique: uploads never take a pool name)."""
        return self.photos[index].name

    def is_upload(self, index: int) -> bool:
        return index >= len(self.resources.photos)

    # -- rating ----------------------------------------------------------------------------------------------------
    def advance(self) -> int | None:
        """Choose the next photo to show (``None`` once every photo was rated or skipped)."""
        chosen = choose_next(self.task_scores(), set(self.ratings) | self.skipped, 1, self.strategy, self.seed)
        self.current = chosen[0] if chosen else None
        return self.current

    def rate(self, stars: Any) -> None:
        """Rate the photo on screen with 1-5 stars and move on."""
        if self.current is None:
            raise InputError("There is no photo left to rate: upload more photos, or press Personalize.")
        try:
            value = float(stars)
        except (TypeError, ValueError):
            raise InputError(f"A rating is 1 to 5 stars; received {stars!r}.") from None
        if value not in STARS:
            raise InputError(f"A rating is 1 to 5 stars; received {stars!r}.")
        self.ratings[self.current] = value
        self.advance()

    def advance_pair(self) -> tuple[int, int] | None:
        """Choose the next two photos to compare: photos not compared yet first, then pairs not compared yet (``None``
        when there is none left)."""
        compared = {i for pair in self.comparisons for i in pair}
        seed = self.seed + 1 + len(self.comparisons)
        chosen = choose_next(self.task_scores(), compared, 2, self.strategy, seed)
        if len(chosen) < 2:  # every photo was compared: a random pair not compared yet
            seen = {frozenset(pair) for pair in self.comparisons}
            n = len(self.photos)
            fresh = [(a, b) for a in range(n) for b in range(a + 1, n) if frozenset((a, b)) not in seen]
            chosen = list(fresh[np.random.default_rng(seed).integers(len(fresh))]) if fresh else []
        self.current_pair = (chosen[0], chosen[1]) if len(chosen) == 2 else None
        return self.current_pair

    def compare(self, choice: str) -> None:
        """Answer "which of these two do you prefer?" for the pair on screen (`"a"`: the left one, `"b"`: the right
        one, `"tie"`: neither) and move on."""
        if self.current_pair is None:
            raise InputError("There are not two photos to compare: upload more photos.")
        if choice not in CHOICES:
            raise InputError(f"A comparison answer is one of {list(CHOICES)}; received {choice!r}.")
        self.comparisons[self.current_pair] = choice
        self.advance_pair()

    def skip(self) -> None:
        """Leave the photo on screen unrated and move on."""
        if self.current is not None:
            self.skipped.add(self.current)
        self.advance()

    def progress(self) -> str:
        """How far the visitor is, and how many more ratings (or comparisons, which cost about as much) are useful."""
        n = len(self.ratings) + len(self.comparisons)
        if n == 0:
            return f"Rate photos from 1 to 5 stars, or compare two. About {self.useful} answers make a good model."
        rated = self.count_answers("rated", "compared", " · ")
        if n < self.useful:
            more = self.useful - n
            return f"{rated} · {more} more {'is' if more == 1 else 'are'} useful · you can personalize at any time"
        return f"{rated} · enough for a good model; more ratings still help a little"

    def count_answers(self, ratings: str = "ratings", comparisons: str = "comparisons", joint: str = " and ") -> str:
        """How many ratings and comparisons there are, e.g. "8 ratings and 3 comparisons" (a kind with none left out)."""
        counts = ((len(self.ratings), ratings), (len(self.comparisons), comparisons))
        return joint.join(f"{n} {word}" for n, word in counts if n)

    # -- uploads --------------------------------------------------------------------------------------------------
    def add_uploads(self, files: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
        """Add uploaded photos to this visitor's pool: the first is offered next for rating, and all are ranked.

        Returns:
            `list[str]`: One message per refused file; the others were added.
        """
        if not files:
            raise InputError("No photos received: choose one or more JPEG, PNG or WebP files.")
        problems: list[str] = []
        stored: list[Path] = []
        images: list[Image.Image] = []
        taken = {path.name for path in self.resources.photos}
        for i, file in enumerate(files):
            name = Path(names[i] if names else file).name
            if len(self.uploads) + len(stored) >= MAX_UPLOADS:
                problems.append(f"{name} was not added: up to {MAX_UPLOADS} photos of your own are kept per visit.")
                continue
            if f"{Path(name).stem}.png" in taken:  # never shadow a pool photo's name in the answers
                name = f"upload-{name}"
            try:
                path = store_photo(file, self.workdir / "uploads", name)
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
            first = len(self.photos)
            self.uploads.extend(stored)
            self.current = first  # a visitor who adds a photo wants to see what it does: rate it next
        return problems

    # -- personalizing ----------------------------------------------------------------------------------------------
    def preferences(self) -> list[tuple[int, int, str]]:
        """The comparisons, plus one for every two photos rated with different stars (once there are comparisons)."""
        pairs = [(a, b, choice) for (a, b), choice in self.comparisons.items()]
        rated = sorted(self.ratings)
        for i, a in enumerate(rated):
            for b in rated[i + 1 :]:
                if self.ratings[a] != self.ratings[b]:
                    pairs.append((a, b, "a" if self.ratings[a] > self.ratings[b] else "b"))
        return pairs

    def check_ratings(self) -> None:
        """Raise a message for the page when the answers cannot teach an order yet."""
        if self.comparisons:
            if all(choice == "tie" for _, _, choice in self.preferences()):
                raise InputError(
                    f"All {len(self.comparisons)} of your comparisons are 'about the same', so they show no "
                    "preference: pick the photo you like more."
                )
            return
        values = list(self.ratings.values())
        if not values:
            raise InputError(
                "Rate or compare a few photos first: personalization learns from your ratings and comparisons."
            )
        if len(values) == 1:
            raise InputError("One rating cannot show what you prefer: rate at least one more photo, differently.")
        if len(set(values)) == 1:
            raise InputError(
                f"All {len(values)} of your ratings are {values[0]:g} stars, so they show no preference: give the "
                "photos you like more stars than the ones you like less."
            )

    def personalize(self) -> Personalized:
        """Fit this visitor's coefficients, score every photo, and write the model and ratings downloads."""
        self.check_ratings()
        began = time.perf_counter()
        personalizer = self.resources.personalizer
        encoded: EncodedPreferences | EncodedRatings
        if self.comparisons:
            answers = self.preferences()
            shown = sorted({i for a, b, _ in answers for i in (a, b)})
            row = {photo: r for r, photo in enumerate(shown)}
            encoded = EncodedPreferences(
                self.prefix(shown),
                torch.tensor([(row[a], row[b]) for a, b, _ in answers]),
                torch.tensor([PREFERRED_VALUES[choice] for _, _, choice in answers], dtype=torch.float64),
            )
        else:
            rated = sorted(self.ratings)
            encoded = EncodedRatings(self.prefix(rated), torch.tensor([self.ratings[i] for i in rated]))
        with self.resources.lock:
            coefficients, report = personalizer.fit_encoded(encoded)
            scores = personalizer.predict(coefficients, self.prefix(range(len(self.photos)))).numpy()
        folder = self.workdir / "model"
        shutil.rmtree(folder, ignore_errors=True)  # one model per visitor: the previous fit's download goes
        export = self.download_export()
        with transformers_bars_off():
            self._model(report).save_pretrained(folder / "my-aesthetic-model", export=export)
        archive = Path(shutil.make_archive(str(folder / "my-aesthetic-model"), "zip", folder, "my-aesthetic-model"))
        shutil.rmtree(folder / "my-aesthetic-model")  # only the zip is served
        seconds = time.perf_counter() - began
        self.result = Personalized(report, scores, seconds, archive, export, self.write_answers())
        return self.result

    def _model(self, report: PersonalizationReport) -> AestheticModel:
        """The personalized model of a fit (merged on demand: a full copy of the weights)."""
        return self.resources.base.with_coefficients(self.resources.bank, report.coefficients, info=report.summary())

    def download_export(self) -> str:
        """How the model download is saved: as coefficients when both the base and the bank are on the Hub (they
        load anywhere by id), else as merged weights (a coefficients export would point at this server's folders)."""
        base, bank = self.resources.base.source, self.resources.bank.source
        return COEFFICIENTS if base is not None and base.on_hub and bank is not None and bank.on_hub else MERGED

    def answered(self) -> set[int]:
        """The photos the visitor rated or compared."""
        return set(self.ratings) | {i for pair in self.comparisons for i in pair}

    def ranking(self, scores: np.ndarray, limit: int = 24) -> list[tuple[Path, str]]:
        """The photos neither rated nor compared, best first by ``scores``, then the visitor's own photos that are
        not among them: (file, caption) pairs. An own photo's caption gives its rank among all the photos."""
        answered = self.answered()
        order = sorted(range(len(self.photos)), key=lambda i: (-scores[i], i))
        overall = {photo: rank + 1 for rank, photo in enumerate(order)}
        best = [i for i in order if i not in answered][:limit]
        own = [i for i in order if self.is_upload(i) and i not in best]

        def caption(index: int, rank: int) -> str:
            if self.is_upload(index):
                return f"your photo: #{overall[index]} of {len(order)} · {scores[index]:.2f}"
            return f"#{rank} · {scores[index]:.2f}"

        return [(self.photos[i], caption(i, rank + 1)) for rank, i in enumerate(best + own)]

    def agreement(self) -> float | None:
        """SROCC between the personalized and the base model's scores on the unrated photos."""
        if self.result is None:
            return None
        answered = self.answered()
        unrated = [i for i in range(len(self.photos)) if i not in answered]
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
    def write_answers(self) -> Path:
        """What the visitor answered, to download: a zip of one folder holding the photos answered about, their ratings
        as `metadata.csv` (what `taskvec_aesthetics.data.load_ratings` reads from the folder) and their comparisons
        as `comparisons.csv` (what `load_preferences` reads)."""
        folder = self.workdir / "answers" / "my-answers"
        shutil.rmtree(folder.parent, ignore_errors=True)
        folder.mkdir(parents=True)
        for index in sorted(self.answered()):
            shutil.copyfile(self.photos[index], folder / self.name(index))
        if self.ratings:
            rows = [[self.name(i), f"{self.ratings[i]:g}"] for i in sorted(self.ratings)]
            _write_csv(folder / "metadata.csv", ["file_name", "score"], rows)
        if self.comparisons:
            rows = [[self.name(a), self.name(b), choice] for (a, b), choice in self.comparisons.items()]
            _write_csv(folder / "comparisons.csv", ["image_a", "image_b", "preferred"], rows)
        archive = shutil.make_archive(str(folder.parent / "my-answers"), "zip", folder.parent, folder.name)
        shutil.rmtree(folder)  # only the zip is served
        return Path(archive)

    def push(self, repo_id: str, token: str, export: str = "merged") -> str:
        """Push the personalized model to the Hub; returns the commit url."""
        if self.result is None:
            raise InputError("Personalize first: there is no model to push yet.")
        repo_id, token = (repo_id or "").strip(), (token or "").strip()
        if not repo_id or repo_id.count("/") > 1:
            raise InputError(f"Enter a repository id like 'your-name/my-aesthetic-model'; received {repo_id!r}.")
        if not token:
            raise InputError("Paste a Hugging Face access token with write permission (hf.co/settings/tokens).")
        commit = self._model(self.result.report).push_to_hub(repo_id, export=export, token=token)
        return str(getattr(commit, "commit_url", commit))

    def close(self) -> None:
        """Delete this visitor's files."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
