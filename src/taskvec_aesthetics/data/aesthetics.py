"""Readers for the generic aesthetics databases: AVA, AADB and TAD66K.

Each reader takes the database root, the level (`"image"`, or `"rating"` for AADB's individual ratings) and
an [`IssueLog`], and returns [`Record`]s on the database's own scale with their official split. Use them
through [`load_database`].
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .records import IssueLog, Record, parse_score, read_csv_rows, read_whitespace_rows, require_path

__all__ = ["read_aadb", "read_ava", "read_tad66k"]

logger = logging.getLogger(__name__)

AVA_LAYOUT = """AVA_dataset/
  AVA.txt                                  no header; index, image id, votes for 1..10, tag1, tag2, challenge
  aesthetics_image_lists/generic_test.jpgl one test image id per line
  images/<image_id>.jpg"""

AADB_LAYOUT = """AADB/
  datasetImages_originalSize/<name>.jpg
  imgListFiles_label/                      (some archives nest a second imgListFiles_label/ inside)
    imgListTrainRegression_score.txt       no header; "<image name> <score in [0, 1]>"
    imgListValidationRegression_score.txt
    imgListTestNewRegression_score.txt
  AADB_AllinAll.csv                        Mechanical Turk results with WorkerId; needed at rating level only,
                                           pass level='image' to load the official scores without it"""

TAD66K_LAYOUT = """TAD66K/
  TAD66K/<image>.jpg                       one flat image folder
  labels/merge/train.csv                   header "image,score", CRLF line endings, scores on 1-10
  labels/merge/test.csv"""

_AADB_LISTS = {
    "train": "imgListTrainRegression_score.txt",
    "validation": "imgListValidationRegression_score.txt",
    "test": "imgListTestNewRegression_score.txt",
}
# https://farm{N}.staticflickr.com/{server}/{photo}_{secret}_b.jpg -> farm{N}_{server}_{photo}_{secret}_b.jpg
_FLICKR_URL = re.compile(r"^https?://farm(\d+)\.static\.?flickr\.com/(\d+)/([^/?#]+)$")


def read_ava(root: Path, level: str, log: IssueLog, *, image_folder: str = "images") -> list[Record]:
    """Read AVA: `AVA.txt` vote counts; test = ids in `generic_test.jpgl`, train = every other image.

    The score is the mean vote, sum(i * count_i) / sum(count_i) on 1-10; `score_distribution` is the vote
    histogram normalised to sum 1. Images are `<image_folder>/<image_id>.jpg`.
    """
    labels = require_path(root, ["AVA.txt"], "AVA", AVA_LAYOUT)
    test_list = require_path(root, ["aesthetics_image_lists/generic_test.jpgl"], "AVA", AVA_LAYOUT)
    test_ids = {fields[0] for _, fields in read_whitespace_rows(test_list, 1, log)}
    images = root / image_folder
    records = []
    for line, fields in read_whitespace_rows(labels, 15, log):
        image_id = fields[1]
        try:
            votes = [int(value) for value in fields[2:12]]
        except ValueError:
            log.add(labels, line, f"vote counts {fields[2:12]} are not all integers")
            continue
        total = sum(votes)
        if total <= 0 or min(votes) < 0:
            log.add(labels, line, f"vote counts {votes} have no positive total")
            continue
        records.append(
            Record(
                image=images / f"{image_id}.jpg",
                image_id=image_id,
                score=sum(value * count for value, count in enumerate(votes, start=1)) / total,
                source=labels.name,
                line=line,
                distribution=[count / total for count in votes],
                split="test" if image_id in test_ids else "train",
            )
        )
    return records


def read_aadb(
    root: Path, level: str, log: IssueLog, *, image_folder: str = "datasetImages_originalSize"
) -> list[Record]:
    """Read AADB: the official train / validation / test (`TestNew`) score lists, or individual ratings.

    At image level the score is the official one in [0, 1]. At rating level each Mechanical Turk rating of
    `AADB_AllinAll.csv` (`Answer.overallScoreK` on 1-5 for image `Input.image_urlK`) becomes one row, mapped
    onto the same [0, 1] scale as (rating - 1) / 4, with the worker's `WorkerId` as `user_id`; a rating of 0
    marks an invalid answer and is dropped. Ratings keep the official split of their image; images outside
    the official lists are dropped. Image names are rebuilt from the Flickr URL as
    `farm{N}_{server}_{photo}_{secret}_b.jpg`.
    """
    first_list = require_path(
        root,
        [
            f"imgListFiles_label/{_AADB_LISTS['train']}",
            f"imgListFiles_label/imgListFiles_label/{_AADB_LISTS['train']}",
        ],
        "AADB",
        AADB_LAYOUT,
    )
    label_dir, images = first_list.parent, root / image_folder
    official: dict[str, Record] = {}
    for split, file_name in _AADB_LISTS.items():
        path = require_path(label_dir, [file_name], "AADB", AADB_LAYOUT)
        for line, (name, value) in read_whitespace_rows(path, 2, log):
            score = parse_score(value, log, path, line, "score")
            if score is not None:
                official[name] = Record(images / name, name, score, path.name, line, split=split)
    if level == "image":
        return list(official.values())

    ratings_file = require_path(root, ["AADB_AllinAll.csv"], "AADB", AADB_LAYOUT)
    records, invalid_answers, unlisted = [], 0, 0
    for line, row in read_csv_rows(
        ratings_file, ["WorkerId", "Input.image_url1", "Answer.overallScore1"], log, "AADB"
    ):
        worker = row["WorkerId"]
        if not worker:
            log.add(ratings_file, line, "empty WorkerId")
            continue
        slots = sum(1 for column in row if column.startswith("Input.image_url"))
        for slot in range(1, slots + 1):
            url, answer = row.get(f"Input.image_url{slot}", ""), row.get(f"Answer.overallScore{slot}", "")
            if not url:  # a HIT with fewer than 10 images
                continue
            match = _FLICKR_URL.match(url)
            if match is None:
                log.add(ratings_file, line, f"image URL {url!r} is not a Flickr photo URL")
                continue
            rating = parse_score(answer, log, ratings_file, line, f"Answer.overallScore{slot}")
            if rating is None:
                continue
            if rating == 0:
                invalid_answers += 1
                continue
            if not 1 <= rating <= 5:
                log.add(ratings_file, line, f"overall score {answer!r} outside 1-5")
                continue
            name = "farm{}_{}_{}".format(*match.groups())
            image = official.get(name)
            if image is None:
                unlisted += 1
                continue
            records.append(image.rating((rating - 1) / 4, worker, ratings_file.name, line))
    logger.info("AADB: dropped %d invalid (0) answers and %d ratings of unlisted images", invalid_answers, unlisted)
    return records


def read_tad66k(root: Path, level: str, log: IssueLog, *, image_folder: str = "TAD66K") -> list[Record]:
    """Read TAD66K: `labels/merge/{train,test}.csv` (the TANet benchmark split), scores on 1-10.

    The per-theme `labels/unmerge/` files split the images differently and are not used. The label folder
    is also found as `dataset/merge/`, its name inside the authors' `dataset.zip`.
    """
    images = root / image_folder
    records = []
    for split in ("train", "test"):
        path = require_path(root, [f"labels/merge/{split}.csv", f"dataset/merge/{split}.csv"], "TAD66K", TAD66K_LAYOUT)
        for line, row in read_csv_rows(path, ["image", "score"], log, "TAD66K"):
            score = parse_score(row["score"], log, path, line, "score")
            if score is not None:
                records.append(Record(images / row["image"], row["image"], score, path.name, line, split=split))
    return records
