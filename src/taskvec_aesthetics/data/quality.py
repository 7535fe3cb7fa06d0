"""Readers for the image quality (IQA) databases: KonIQ-10k, SPAQ, LIVE Challenge and KADID-10k.

Each reader takes the database root, the level (always `"image"`) and an [`IssueLog`], and returns
[`Record`]s on the database's own scale, with the official split where one exists (`None` otherwise, so that
[`load_database`] draws a seeded one). Use them through [`load_database`].
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from .records import DatabaseFormatError, IssueLog, Record, find_path, parse_score, read_csv_rows, require_path

__all__ = ["read_kadid10k", "read_koniq10k", "read_livec", "read_spaq"]

logger = logging.getLogger(__name__)

KONIQ_LAYOUT = """koniq10k/
  1024x768/<image_name>                    (or 512x384/, chosen with resolution=)
  koniq10k_distributions_sets.csv          image_name,c1..c5,c_total,MOS,SD,set    (MOS on 0-100, official split)
  koniq10k_scores_and_distributions.csv    image_name,c1..c5,c_total,MOS,SD,MOS_zscore (if the above is absent)"""

SPAQ_LAYOUT = """SPAQ/
  TestImage/00001.jpg ... 11125.jpg
  Annotations/MOS and Image attribute scores.xlsx   first sheet, header row: Image name | MOS | Brightness | ..."""

LIVEC_LAYOUT = """ChallengeDB_release/
  Images/<name>.bmp or .JPG
  Data/AllImages_release.mat               cell array (1169, 1) of image names
  Data/AllMOS_release.mat                  (1, 1169) MOS on 0-100"""

KADID_LAYOUT = """kadid10k/
  images/I01_01_01.png ...                 I{reference}_{distortion}_{level}.png
  dmos.csv                                 header dist_img,ref_img,dmos,var"""

_KONIQ_SETS = {"training": "train", "validation": "validation", "test": "test"}
# By convention the first 7 entries of LIVE Challenge (t1.bmp ... t7.bmp, shown to raters for training) are dropped.
_LIVEC_TRAINING_IMAGES = 7


def read_koniq10k(root: Path, level: str, log: IssueLog, *, resolution: str = "1024x768") -> list[Record]:
    """Read KonIQ-10k: MOS z-score on 0-100 and the 5-bin vote histogram, official split.

    `koniq10k_distributions_sets.csv` carries the official split (`set` = training / validation / test) and
    the 0-100 MOS in its `MOS` column. Where only the OSF `koniq10k_scores_and_distributions.csv` is present,
    its `MOS_zscore` column is used and the split is seeded (a warning says so). The `c1..c5` columns are
    counts in one file and fractions in the other; both are normalised to sum 1.
    """
    sets_file = find_path(root, ["koniq10k_distributions_sets.csv", "metadata/koniq10k_distributions_sets.csv"])
    if sets_file is not None:
        path, score_column, required = sets_file, "MOS", ["image_name", "MOS", "set"]
    else:
        path = require_path(root, ["koniq10k_scores_and_distributions.csv"], "KonIQ-10k", KONIQ_LAYOUT)
        score_column, required = "MOS_zscore", ["image_name", "MOS_zscore"]
        logger.warning(
            "KonIQ-10k: koniq10k_distributions_sets.csv not found; using a seeded split, not the official one"
        )
    bins = [f"c{i}" for i in range(1, 6)]
    images = find_path(root, [resolution, f"koniq10k_{resolution}/{resolution}", f"koniq10k_{resolution}"])
    images = images if images is not None else root / resolution
    records = []
    for line, row in read_csv_rows(path, required + bins, log, "KonIQ-10k"):
        score = parse_score(row[score_column], log, path, line, score_column)
        parsed = [parse_score(row[b], log, path, line, b) for b in bins]
        counts = [c for c in parsed if c is not None]
        if score is None or len(counts) < len(parsed):
            continue
        total = sum(counts)
        if total <= 0:
            log.add(path, line, f"vote histogram {counts} has no positive total")
            continue
        split = None
        if sets_file is not None:
            split = _KONIQ_SETS.get(row["set"])
            if split is None:
                log.add(path, line, f"set {row['set']!r} is not one of {sorted(_KONIQ_SETS)}")
                continue
        distribution = [c / total for c in counts]
        name = row["image_name"]
        records.append(Record(images / name, name, score, path.name, line, distribution=distribution, split=split))
    return records


def read_spaq(root: Path, level: str, log: IssueLog, *, image_folder: str = "TestImage") -> list[Record]:
    """Read SPAQ: the `MOS` column (0-100) of the first sheet of `MOS and Image attribute scores.xlsx`.

    SPAQ has no official split, so the split is seeded. Many pipelines resize the phone photos first; point
    `image_folder` at the resized copies to use them. Needs `openpyxl`.
    """
    path = require_path(root, ["Annotations/MOS and Image attribute scores.xlsx"], "SPAQ", SPAQ_LAYOUT)
    try:
        import openpyxl
    except ImportError as error:
        raise ImportError("Reading SPAQ's .xlsx annotations needs openpyxl: pip install openpyxl") from error
    images = root / image_folder
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        header = [str(cell).strip() if cell is not None else "" for cell in next(rows, ())]
        missing = [name for name in ("Image name", "MOS") if name not in header]
        if missing:
            raise DatabaseFormatError(
                f"SPAQ: {path.name} has header {header}; expected columns 'Image name' and 'MOS'."
            )
        name_index, mos_index = header.index("Image name"), header.index("MOS")
        records = []
        for line, cells in enumerate(rows, start=2):
            if all(cell is None for cell in cells):
                continue
            row = tuple(cells) + (None,) * len(header)  # read-only sheets may return short rows
            name, mos = row[name_index], row[mos_index]
            if not isinstance(name, str) or not name.strip():
                log.add(path, line, f"Image name {name!r} is not a file name")
                continue
            score = parse_score(mos, log, path, line, "MOS")
            if score is not None:
                name = name.strip()
                records.append(Record(images / name, name, score, path.name, line))
    finally:
        workbook.close()
    return records


def read_livec(root: Path, level: str, log: IssueLog, *, image_folder: str = "Images") -> list[Record]:
    """Read LIVE Challenge: image names and MOS (0-100) from the `.mat` files in `Data/`.

    The first 7 entries (the raters' training images t1-t7) are dropped, as in every published loader,
    leaving 1,162 images. There is no official split, so the split is seeded. "Line" numbers in error
    messages are 1-based entry numbers of the `.mat` arrays.
    """
    names_path = require_path(root, ["Data/AllImages_release.mat"], "LIVE Challenge", LIVEC_LAYOUT)
    mos_path = require_path(root, ["Data/AllMOS_release.mat"], "LIVE Challenge", LIVEC_LAYOUT)
    names = _mat_variable(names_path, "AllImages_release")
    mos = _mat_variable(mos_path, "AllMOS_release")
    if names.size != mos.size:
        raise DatabaseFormatError(
            f"LIVE Challenge: {names_path.name} lists {names.size} images but {mos_path.name} has "
            f"{mos.size} MOS values."
        )
    images = root / image_folder
    records = []
    for index in range(_LIVEC_TRAINING_IMAGES, names.size):
        cell = np.asarray(names[index]).ravel()
        if cell.size != 1 or not isinstance(cell[0], str):
            log.add(names_path, index + 1, f"entry {cell!r} is not an image name")
            continue
        score = parse_score(mos[index], log, mos_path, index + 1, "MOS")
        if score is not None:
            records.append(Record(images / cell[0], cell[0], score, names_path.name, index + 1))
    return records


def read_kadid10k(root: Path, level: str, log: IssueLog, *, image_folder: str = "images") -> list[Record]:
    """Read KADID-10k: `dmos.csv`, whose `dmos` column is in fact a MOS on 1-5 (higher is better).

    There is no official split; the seeded split keeps all distortions of one reference image on the same
    side, so no content is shared between train and test.
    """
    path = require_path(root, ["dmos.csv"], "KADID-10k", KADID_LAYOUT)
    images = root / image_folder
    records = []
    for line, row in read_csv_rows(path, ["dist_img", "ref_img", "dmos"], log, "KADID-10k"):
        score = parse_score(row["dmos"], log, path, line, "dmos")
        if score is not None:
            name = row["dist_img"]
            records.append(Record(images / name, name, score, path.name, line, group=row["ref_img"]))
    return records


def _mat_variable(path: Path, name: str) -> np.ndarray:
    try:
        contents = loadmat(path)
    except (ValueError, TypeError, OSError) as error:
        raise DatabaseFormatError(f"LIVE Challenge: {path.name} is not a readable MATLAB file ({error}).") from error
    if name not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise DatabaseFormatError(f"LIVE Challenge: {path.name} holds {found}; expected a variable {name!r}.")
    return np.asarray(contents[name]).ravel()
