"""Readers for the personalised aesthetics databases: PARA, FLICKR-AES, REAL-CUR and LAPIS.

At `"rating"` level each reader returns one [`Record`] per (user, image) with `user_id`; at `"image"` level
one record per image, with the database's official mean score where it publishes one (PARA, LAPIS) and the
mean of the individual ratings otherwise. Use them through [`load_database`].
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from .records import (
    DatabaseFormatError,
    IssueLog,
    Record,
    mean_by_image,
    parse_score,
    read_csv_rows,
    require_path,
)

__all__ = ["FLICKR_AES_TEST_WORKERS", "read_flickr_aes", "read_lapis", "read_para", "read_real_cur"]

logger = logging.getLogger(__name__)

PARA_LAYOUT = """PARA/
  imgs/<sessionId>/<imageName>             e.g. imgs/session1/iaa_pub1_.jpg
  annotation/PARA-Images.csv               one row per (user, image): sessionId,imageName,userId,aestheticScore,...
  annotation/PARA-GiaaTrain.csv            one row per image: imageName,sessionId,aestheticScore_1.0..5.0,
  annotation/PARA-GiaaTest.csv             aestheticScore_mean,..."""

FLICKR_AES_LAYOUT = """FLICKR-AES/
  40K/<image name>.jpg
  FLICKR-AES_image_labeled_by_each_worker.csv   header "worker, imagePair, score" (the name may start with a space)"""

REAL_CUR_LAYOUT = """REAL-CUR/
  <album>/<score 1-5>/<image file>         (optionally under images/); the album owner's score is the folder name"""

LAPIS_LAYOUT = """LAPIS/
  images/<image_filename>
  annotation/LAPIS_PIAA.csv                one row per (participant, image):
                                           image_id,image_filename,participant_id,rating,...
  annotation/LAPIS_GIAA_Trainsplit.csv     one row per image: image_id,image_filename,mean_response,...
  annotation/LAPIS_GIAA_Valsplit.csv
  annotation/LAPIS_GIAA_Testsplit.csv"""

# The standard FLICKR-AES personalisation test workers (Ren et al., ICCV 2017): 37 Mechanical Turk workers with
# 112-180 rated images each. All other workers are training workers.
FLICKR_AES_TEST_WORKERS: tuple[str, ...] = (
    "A03922113RU44GENR8ATX", "A10VDYXRLMTMG2", "A13G469LJFEIYZ", "A192LAQKHD9LW", "A1A8QBCYM6SFQ8",
    "A1CGBNE3QZFW51", "A1EQ2HDHF2WWSY", "A1TOM0H3P1L19Z", "A1YCS8Y1BPXBWY", "A242K5TUM9XWO6",
    "A25YI63H4SWKOZ", "A2AXN2QKLT4EGV", "A2B8HPIZDKYKDR", "A2BHHEWR9PRDX8", "A2KR7F6HPMTVEP",
    "A2O0BD7R62CZP8", "A2PEIHMPPOB1YJ", "A2U83S62P8SZ6T", "A2VPGMQ2IZKJ7H", "A2YAYHZYI7M3HD",
    "A39IGUCTEQR4EK", "A3B9DYMSPRUS4E", "A3BYQA67Q36BA9", "A3D46S3V9SYXTT", "A3HZKR9O1XQ624",
    "A3L1RRERPBSIWG", "A3MCQHA2V0G46V", "A5ACBHV38DICN", "A75N0N2PWNC9Q", "AGXT2OHMTWBRS",
    "AHPUVVEDSDA5F", "AIC2D8A9UQO8S", "AJCY65VHJYRG3", "ALNTW7HS87J5C", "AN8II2VG05ZWN",
    "AO62FOJ5E27B4", "ASTH7D452IZA7",
)  # fmt: skip

_PARA_BINS = [f"aestheticScore_{1 + 0.5 * i:.1f}" for i in range(9)]
_LAPIS_SPLITS = {
    "train": "LAPIS_GIAA_Trainsplit.csv",
    "validation": "LAPIS_GIAA_Valsplit.csv",
    "test": "LAPIS_GIAA_Testsplit.csv",
}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def read_para(root: Path, level: str, log: IssueLog, *, image_folder: str = "imgs") -> list[Record]:
    """Read PARA: official GIAA split by image (`PARA-Giaa{Train,Test}.csv`); scores on 1-5.

    At image level the score is `aestheticScore_mean` and `score_distribution` the normalised counts of the
    nine columns `aestheticScore_1.0` ... `aestheticScore_5.0`. At rating level each row of `PARA-Images.csv`
    (`aestheticScore` by `userId`) keeps the split of its image; ratings of images outside the GIAA lists are
    dropped. Images are `<image_folder>/<sessionId>/<imageName>`.
    """
    images = root / image_folder
    official: dict[str, Record] = {}
    for split, file_name in (("train", "PARA-GiaaTrain.csv"), ("test", "PARA-GiaaTest.csv")):
        path = require_path(root, [f"annotation/{file_name}"], "PARA", PARA_LAYOUT)
        required = ["imageName", "sessionId", "aestheticScore_mean", *_PARA_BINS]
        for line, row in read_csv_rows(path, required, log, "PARA"):
            score = parse_score(row["aestheticScore_mean"], log, path, line, "aestheticScore_mean")
            parsed = [parse_score(row[b], log, path, line, b) for b in _PARA_BINS]
            counts = [c for c in parsed if c is not None]
            if score is None or len(counts) < len(parsed):
                continue
            total = sum(counts)
            if total <= 0:
                log.add(path, line, f"vote histogram {counts} has no positive total")
                continue
            name = row["imageName"]
            official[name] = Record(
                images / row["sessionId"] / name,
                name,
                score,
                path.name,
                line,
                distribution=[c / total for c in counts],
                split=split,
            )
    if level == "image":
        return list(official.values())

    path = require_path(root, ["annotation/PARA-Images.csv"], "PARA", PARA_LAYOUT)
    records, unlisted = [], 0
    for line, row in read_csv_rows(path, ["sessionId", "imageName", "userId", "aestheticScore"], log, "PARA"):
        score = parse_score(row["aestheticScore"], log, path, line, "aestheticScore")
        if score is None or not _has_user(row["userId"], log, path, line):
            continue
        image = official.get(row["imageName"])
        if image is None:
            unlisted += 1
            continue
        records.append(image.rating(score, row["userId"], path.name, line))
    if unlisted:
        logger.info("PARA: dropped %d ratings of images outside PARA-GiaaTrain/Test.csv", unlisted)
    return records


def read_flickr_aes(root: Path, level: str, log: IssueLog, *, image_folder: str = "40K") -> list[Record]:
    """Read FLICKR-AES from `FLICKR-AES_image_labeled_by_each_worker.csv`; scores on 1-5.

    Split (the standard personalisation protocol): `"test"` holds the ratings of the 37
    `FLICKR_AES_TEST_WORKERS`; `"train"` holds the other workers' ratings of the images that no test worker
    rated, so no test image is seen in training (`"all"` is the union, so it lacks those ratings too).
    At image level an image's score is the mean of all its ratings and it is a test image when a test
    worker rated it (the official `FLICKR-AES_image_score.txt` is not used: its scale is not documented).
    """
    path = require_path(
        root,
        [
            "FLICKR-AES_image_labeled_by_each_worker.csv",
            "iccv_17_aesthetics_dataset/FLICKR-AES_image_labeled_by_each_worker.csv",
        ],
        "FLICKR-AES",
        FLICKR_AES_LAYOUT,
    )
    images, test_workers = root / image_folder, set(FLICKR_AES_TEST_WORKERS)
    paths: dict[str, Path] = {}
    ratings = []
    for line, row in read_csv_rows(path, ["worker", "imagePair", "score"], log, "FLICKR-AES"):
        score = parse_score(row["score"], log, path, line, "score")
        if score is None or not _has_user(row["worker"], log, path, line):
            continue
        name = row["imagePair"]
        image = paths.setdefault(name, images / name)
        split = "test" if row["worker"] in test_workers else "train"
        ratings.append(Record(image, name, score, path.name, line, user_id=row["worker"], split=split))
    test_images = {r.image_id for r in ratings if r.split == "test"}
    if level == "image":
        for r in ratings:
            r.split = "test" if r.image_id in test_images else "train"
        return mean_by_image(ratings)
    kept = [r for r in ratings if r.split == "test" or r.image_id not in test_images]
    logger.info("FLICKR-AES: dropped %d training-worker ratings of test images", len(ratings) - len(kept))
    return kept


def read_real_cur(root: Path, level: str, log: IssueLog) -> list[Record]:
    """Read REAL-CUR: `<album>/<score>/<image>` folders, one album per user, the score (1-5) in the folder name.

    Every album owner is a test user of the personalisation protocol, so only `"test"` (= `"all"`) exists.
    The user id is the album folder name and the image id is `<album>/<file name>`. Albums are ordered by the
    number their name ends with. A folder inside an album whose name is not a number is reported.
    """
    base = root / "images" if (root / "images").is_dir() else root
    if not base.is_dir():
        raise DatabaseFormatError(
            f"REAL-CUR: root {str(root)!r} is not a directory. Expected layout:\n{REAL_CUR_LAYOUT}"
        )
    albums = [d for d in base.iterdir() if d.is_dir() and any(_is_number(s.name) for s in d.iterdir() if s.is_dir())]
    if not albums:
        raise DatabaseFormatError(
            f"REAL-CUR: no album folders with score sub-folders under {str(base)!r}. "
            f"Expected layout:\n{REAL_CUR_LAYOUT}"
        )
    records = []
    for album in sorted(albums, key=_album_order):
        for score_dir in sorted(d for d in album.iterdir() if d.is_dir()):
            where = f"{album.name}/{score_dir.name}"
            score = parse_score(score_dir.name, log, where, None, "score folder")
            if score is None:
                continue
            for image in sorted(score_dir.iterdir()):
                if image.is_file() and image.suffix.lower() in _IMAGE_SUFFIXES:
                    image_id = f"{album.name}/{image.name}"
                    records.append(Record(image, image_id, score, where, None, user_id=album.name, split="test"))
    return mean_by_image(records) if level == "image" else records


def read_lapis(root: Path, level: str, log: IssueLog, *, image_folder: str = "images") -> list[Record]:
    """Read LAPIS: official train / validation / test split by image (`LAPIS_GIAA_*split.csv`); scores 0-100.

    At image level the score is `mean_response`; at rating level each row of `LAPIS_PIAA.csv` (`rating` by
    `participant_id`) keeps the split of its image, matched by `image_id`; ratings of images outside the split
    files are dropped. Files that are not UTF-8 are read as Latin-1.
    """
    images = root / image_folder
    official: dict[str, Record] = {}
    for split, file_name in _LAPIS_SPLITS.items():
        path = require_path(root, [f"annotation/{file_name}"], "LAPIS", LAPIS_LAYOUT)
        for line, row in read_csv_rows(path, ["image_id", "image_filename", "mean_response"], log, "LAPIS"):
            score = parse_score(row["mean_response"], log, path, line, "mean_response")
            if score is not None:
                key, name = row["image_id"], row["image_filename"]
                official[key] = Record(images / name, key, score, path.name, line, split=split)
    if level == "image":
        return list(official.values())

    path = require_path(root, ["annotation/LAPIS_PIAA.csv"], "LAPIS", LAPIS_LAYOUT)
    records, unlisted = [], 0
    for line, row in read_csv_rows(path, ["image_id", "participant_id", "rating"], log, "LAPIS"):
        score = parse_score(row["rating"], log, path, line, "rating")
        if score is None or not _has_user(row["participant_id"], log, path, line):
            continue
        image = official.get(row["image_id"])
        if image is None:
            unlisted += 1
            continue
        records.append(image.rating(score, row["participant_id"], path.name, line))
    if unlisted:
        logger.info("LAPIS: dropped %d ratings of images outside the GIAA split files", unlisted)
    return records


def _has_user(user_id: str, log: IssueLog, path: Path, line: int) -> bool:
    if user_id:
        return True
    log.add(path, line, "empty user id")
    return False


def _is_number(name: str) -> bool:
    try:
        return math.isfinite(float(name))
    except ValueError:
        return False


def _album_order(album: Path) -> tuple[float, str]:
    match = re.search(r"(\d+)$", album.name)
    return (int(match.group(1)) if match else math.inf, album.name)
