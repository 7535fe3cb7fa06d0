"""Tiny copies of the public databases, written in exactly their official on-disk formats.

`make_database_fixture(name, root)` writes a few 16x16 noise images and the database's label files (same
file names, headers, separators, line endings, `.mat` / `.xlsx` containers and folder nesting as the real
release) and returns a [`DatabaseFixture`] recording what it wrote, so tests can compare a loader's output
with the truth. `bad_rows=` inserts malformed rows and `missing_images=` deletes image files, for error tests.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "FIXTURE_NAMES",
    "FLICKR_TEST_WORKERS",
    "DatabaseFixture",
    "make_database_fixture",
    "write_database_fixture",
]

# Test workers of FLICKR-AES used by the fixture (from the standard list of 37).
FLICKR_TEST_WORKERS = ("AGXT2OHMTWBRS", "A10VDYXRLMTMG2", "A2BHHEWR9PRDX8")


@dataclass
class DatabaseFixture:
    """What a fixture wrote.

    `images` maps image id to its image-level score as the files state it (for AVA, the vote mean),
    `ratings` maps (image id, user id) to each individual rating as written (on the file's own scale,
    invalid answers included), `splits` the official split of each image, `distributions` the normalised
    vote histograms, `bad_rows` the (file name, line number) of injected malformed rows and
    `missing_images` the ids of images whose file was deleted.
    """

    name: str
    root: Path
    images: dict[str, float] = field(default_factory=dict)
    ratings: dict[tuple[str, str], float] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    distributions: dict[str, list[float]] = field(default_factory=dict)
    image_files: dict[str, Path] = field(default_factory=dict)
    bad_rows: list[tuple[str, int | None]] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def write_database_fixture(name: str, root: str | Path, num_images: int = 12, seed: int = 0, **kwargs) -> Path:
    """Write a fixture of database `name` under `root` and return the database's root folder."""
    return make_database_fixture(name, root, num_images, seed, **kwargs).root


def make_database_fixture(
    name: str, root: str | Path, num_images: int = 12, seed: int = 0, *, bad_rows: int = 0, missing_images: int = 0
) -> DatabaseFixture:
    """Write a fixture of database `name` under `root`; see the module docstring."""
    if name not in _WRITERS:
        raise ValueError(f"No fixture for {name!r}; known: {FIXTURE_NAMES}.")
    if missing_images and name == "real-cur":
        raise ValueError("REAL-CUR images are found by listing folders, so none can be missing.")
    folder, writer = _WRITERS[name]
    fixture = DatabaseFixture(name, Path(root) / folder)
    rng = np.random.default_rng(seed)
    writer(fixture, rng, num_images, bad_rows)
    for image_id in list(fixture.image_files)[:missing_images]:
        fixture.image_files[image_id].unlink()
        fixture.missing_images.append(image_id)
    return fixture


# --- writing helpers ---------------------------------------------------------------------------------------


def _noise_image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _image(fixture: DatabaseFixture, image_id: str, path: Path, rng: np.random.Generator) -> None:
    _noise_image(path, rng)
    fixture.image_files[image_id] = path


def _write(path: Path, lines: list[str], newline: str = "\n", encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode(encoding))


def _csv_line(fields: list[object], quote_all: bool = False) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerow(fields)
    return buffer.getvalue()


def _inject(fixture: DatabaseFixture, file_name: str, lines: list[str], bad: list[str], header_lines: int = 1) -> None:
    """Insert bad lines between data lines (not only at the end) and record their 1-based line numbers."""
    for i, text in enumerate(bad):
        position = min(header_lines + 1 + 2 * i, len(lines))
        lines.insert(position, text)
        fixture.bad_rows.append((file_name, position + 1))


def _splits(rng: np.random.Generator, n: int, names: tuple[str, ...] = ("train", "test")) -> list[str]:
    # Every split gets at least one image, the rest go round-robin in a seeded order.
    return [names[i % len(names)] for i in rng.permutation(n)]


def _flickr_name(rng: np.random.Generator, suffix: str = "") -> str:
    farm, server, photo = rng.integers(1, 10), rng.integers(10, 9999), rng.integers(10**7, 10**11)
    return f"farm{farm}_{server}_{photo}_{rng.bytes(5).hex()}{suffix}.jpg"


def _amt_worker(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "A" + "".join(alphabet[i] for i in rng.integers(0, len(alphabet), 13))


def _raters(rng: np.random.Generator, users: list[str], low: int = 2, high: int = 3) -> list[str]:
    return list(rng.choice(users, size=int(rng.integers(low, high + 1)), replace=False))


# --- one writer per database -------------------------------------------------------------------------------


def _ava(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    ids = [str(i) for i in 100_000 + rng.choice(900_000, n, replace=False)]
    splits = _splits(rng, n)
    lines = []
    for index, (image_id, split) in enumerate(zip(ids, splits), start=1):
        votes = rng.integers(0, 30, 10)
        votes[rng.integers(0, 10)] += 1  # never zero votes in total
        tags = rng.integers(0, 67, 2)
        lines.append(" ".join(map(str, [index, image_id, *votes, *tags, rng.integers(1, 1399)])))
        fixture.images[image_id] = float(np.dot(np.arange(1, 11), votes) / votes.sum())
        fixture.distributions[image_id] = list(votes / votes.sum())
        fixture.splits[image_id] = split
        _image(fixture, image_id, fixture.root / "images" / f"{image_id}.jpg", rng)
    bad = ["90 123456 0 1 5 17 38 36 15 6 5", "91 654321 0 1 x 17 38 36 15 6 5 1 1 22 1396"]
    _inject(fixture, "AVA.txt", lines, [bad[i % 2] for i in range(bad_rows)], header_lines=0)
    _write(fixture.root / "AVA.txt", lines)
    lists = fixture.root / "aesthetics_image_lists"
    _write(lists / "generic_test.jpgl", [i for i in ids if fixture.splits[i] == "test"])
    _write(lists / "generic_ls_train.jpgl", [i for i in ids if fixture.splits[i] == "train"][:3])
    _write(fixture.root / "tags.txt", ["1 Abstract", "24 Action"])


def _aadb(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    names = [_flickr_name(rng, "_b") for _ in range(n)]
    splits = _splits(rng, n, ("train", "validation", "test"))
    labels = fixture.root / "imgListFiles_label" / "imgListFiles_label"  # nested, as in some archives
    files = {"train": "Train", "validation": "Validation", "test": "TestNew"}
    for split, infix in files.items():
        rows = [(name, round(0.05 * int(rng.integers(0, 21)), 2)) for name, s in zip(names, splits) if s == split]
        _write(labels / f"imgList{infix}Regression_score.txt", [f"{name} {score}" for name, score in rows])
        _write(labels / f"imgList{infix}Regression_ColorHarmony.txt", [f"{name} 0.2" for name, _ in rows])
        fixture.images.update(dict(rows))
        fixture.splits.update({name: split for name, _ in rows})
    for name in names:
        _image(fixture, name, fixture.root / "datasetImages_originalSize" / name, rng)
    # Mechanical Turk export: each row is one worker x up to 10 images; 0 marks an invalid answer.
    workers = [_amt_worker(rng) for _ in range(3)]
    header = ["HITId", "WorkerId", *[f"Input.image_url{k}" for k in range(1, 11)]]
    header += [f"Answer.overallScore{k}" for k in range(1, 11)] + ["Approve", "Reject"]
    lines = [_csv_line(header, quote_all=True)]
    unlisted = _flickr_name(rng, "_b")
    for worker in workers:
        rated = [*names, unlisted]
        for start in range(0, len(rated), 10):
            chunk = rated[start : start + 10]
            answers = [int(rng.integers(0, 6)) for _ in chunk]
            for name, answer in zip(chunk, answers):
                fixture.ratings[(name, worker)] = float(answer)
            urls = [_flickr_url(name) for name in chunk] + [""] * (10 - len(chunk))
            scores = [str(a) for a in answers] + [""] * (10 - len(chunk))
            lines.append(_csv_line([rng.bytes(4).hex(), worker, *urls, *scores, "x", ""], quote_all=True))
    fixture.ratings = {key: value for key, value in fixture.ratings.items() if key[0] != unlisted}
    bad_urls = ["http://example.com/photo.jpg", _flickr_url(names[0])]
    bad_scores = ["3", "high"]
    bad = [
        _csv_line(
            ["bad", workers[0], bad_urls[i % 2], *[""] * 9, bad_scores[i % 2], *[""] * 9, "", ""], quote_all=True
        )
        for i in range(bad_rows)
    ]
    _inject(fixture, "AADB_AllinAll.csv", lines, bad)
    _write(fixture.root / "AADB_AllinAll.csv", lines)


def _flickr_url(name: str) -> str:
    farm, server, rest = name.split("_", 2)
    return f"https://{farm}.staticflickr.com/{server}/{rest}"


def _tad66k(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    names = [
        f"lanphere{rng.integers(10**7, 10**8)}.jpg" if i % 2 else f"{rng.integers(10**7, 10**8)}@N08{i}.jpg"
        for i in range(n)
    ]
    splits = _splits(rng, n)
    for split in ("train", "test"):
        rows = [(name, round(float(rng.uniform(1.13, 9.46)), 2)) for name, s in zip(names, splits) if s == split]
        lines = ["image,score", *[f"{name},{score}" for name, score in rows]]
        bad = ["broken.jpg,n/a", "broken.jpg,5.0,extra"] if split == "train" else []
        _inject(fixture, f"{split}.csv", lines, [bad[i % 2] for i in range(bad_rows)] if bad else [])
        _write(fixture.root / "labels" / "merge" / f"{split}.csv", lines, newline="\r\n")
        fixture.images.update(dict(rows))
        fixture.splits.update({name: split for name, _ in rows})
    # The per-theme files split differently; loaders must not read them.
    _write(fixture.root / "labels" / "unmerge" / "train" / "art.csv", ["image,score", f"{names[0]},5.0"], "\r\n")
    for name in names:
        _image(fixture, name, fixture.root / "TAD66K" / name, rng)


def _para(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    users = [f"{'AB'[i % 2]}{rng.bytes(3).hex()}" for i in range(4)]
    names = [(f"session{1 + i % 2}", f"iaa_pub{i + 1}_.jpg") for i in range(n)]
    splits = _splits(rng, n)
    header = "sessionId,imageName,userId,aestheticScore,qualityScore,compositionScore,colorScore,dofScore,"
    header += "contentScore,lightScore,isObjectEmphasis,imgEmotion,difficultyOfJudgment,contentPreference,"
    header += "willingnessToShare,semantic"
    lines = [header]
    bins = [1 + 0.5 * i for i in range(9)]
    giaa: dict[str, list[str]] = {"train": [], "test": []}
    for (session, name), split in zip(names, splits):
        scores = []
        for user in _raters(rng, users):
            score = bins[int(rng.integers(0, 9))]
            scores.append(score)
            fixture.ratings[(name, user)] = score
            lines.append(f"{session},{name},{user},{score},4.0,3.0,4.0,3.0,3.0,4.0,1.0,contentment,0,3,3,landscape")
        counts = [scores.count(b) for b in bins]
        fixture.images[name] = float(np.mean(scores))
        fixture.distributions[name] = [c / len(scores) for c in counts]
        fixture.splits[name] = split
        giaa[split].append(
            ",".join(map(str, [name, session, "landscape", *counts, np.mean(scores), np.std(scores), 3.5, 3.0]))
        )
        _image(fixture, name, fixture.root / "imgs" / session / name, rng)
    bad = [
        f"session1,{names[0][1]},{users[0]},great,4.0,3.0,4.0,3.0,3.0,4.0,1.0,awe,0,3,3,people",
        "session1,x.jpg,A000000",
    ]
    _inject(fixture, "PARA-Images.csv", lines, [bad[i % 2] for i in range(bad_rows)])
    annotation = fixture.root / "annotation"
    _write(annotation / "PARA-Images.csv", lines)
    giaa_header = ",".join(["imageName", "sessionId", "semantic", *[f"aestheticScore_{b:.1f}" for b in bins]])
    giaa_header += ",aestheticScore_mean,aestheticScore_std,qualityScore_mean,compositionScore_mean"
    _write(annotation / "PARA-GiaaTrain.csv", [giaa_header, *giaa["train"]])
    _write(annotation / "PARA-GiaaTest.csv", [giaa_header, *giaa["test"]])
    user_header = "userId,age,gender,EducationalLevel,artExperience,photographyExperience,"
    user_header += "personality-E,personality-A,personality-N,personality-O,personality-C"
    _write(
        annotation / "PARA-UserInfo.csv",
        [user_header, *[f"{u},22-25,female,university,competent,beginner,6,7,4,6,5" for u in users]],
    )


def _koniq10k(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    names = [f"{i}.jpg" for i in 10**10 + rng.choice(10**6, n, replace=False)]
    splits = _splits(rng, n, ("train", "validation", "test"))
    sets_lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
    scores_lines = [
        _csv_line(["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"], True)
    ]
    set_names = {"train": "training", "validation": "validation", "test": "test"}
    for name, split in zip(names, splits):
        counts = rng.integers(0, 40, 5)
        counts[2] += 1
        total = int(counts.sum())
        fractions = counts / total
        mos_1_5 = float(np.dot(np.arange(1, 6), fractions))
        mos = round(float(rng.uniform(3.91, 88.39)), 4)
        sets_lines.append(",".join(map(str, [name, *fractions, total, mos, 0.52, set_names[split]])))
        scores_lines.append(",".join(map(str, [name, *counts, total, round(mos_1_5, 6), 0.52, mos])))
        fixture.images[name] = mos
        fixture.distributions[name] = list(fractions)
        fixture.splits[name] = split
        _image(fixture, name, fixture.root / "1024x768" / name, rng)
    bad = ["1.jpg,0.1,0.2,0.3,0.2,0.2,100,high,0.5,training", "2.jpg,0.1,0.2,0.3,0.2,0.2,100,50.0,0.5,bogus"]
    _inject(fixture, "koniq10k_distributions_sets.csv", sets_lines, [bad[i % 2] for i in range(bad_rows)])
    _write(fixture.root / "koniq10k_distributions_sets.csv", sets_lines)
    _write(fixture.root / "koniq10k_scores_and_distributions.csv", scores_lines)


def _spaq(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    rows = []
    for i in range(n):
        name = f"{i + 1:05d}.jpg"
        values = [round(float(v), 2) for v in rng.uniform(0, 100, 6)]
        rows.append([name, *values])
        fixture.images[name] = values[0]
        _image(fixture, name, fixture.root / "TestImage" / name, rng)
    bad = [["99998.jpg", "n/a", 1, 2, 3, 4, 5], [None, 50.0, 1, 2, 3, 4, 5]]
    lines = [None, *rows]  # a placeholder for the header row keeps Excel row numbers
    _inject(fixture, "MOS and Image attribute scores.xlsx", lines, [bad[i % 2] for i in range(bad_rows)])
    for row in lines[1:]:
        sheet.append(row)
    path = fixture.root / "Annotations" / "MOS and Image attribute scores.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    scenes = openpyxl.Workbook()
    scenes.active.append(["Image name", "Animal", "Cityscape", "Human", "Indoor scene", "Landscape", "Night scene"])
    scenes.save(fixture.root / "Annotations" / "Scene category labels.xlsx")


def _livec(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    from scipy.io import savemat

    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{100 + i}.{'bmp' if i % 2 else 'JPG'}" for i in range(n)]
    mos = [round(float(v), 2) for v in rng.uniform(3.42, 92.43, len(names))]
    for index in range(7, len(names)):
        fixture.images[names[index]] = mos[index]
    for name in names[:7]:
        _noise_image(fixture.root / "Images" / "trainingImages" / name, rng)
    for name in names[7:]:
        _image(fixture, name, fixture.root / "Images" / name, rng)
    for i in range(bad_rows):
        index = 8 + 2 * i
        mos[index] = math.nan
        del fixture.images[names[index]]
        fixture.bad_rows.append(("AllMOS_release.mat", index + 1))
    cells = np.empty((len(names), 1), dtype=object)
    for index, name in enumerate(names):
        cells[index, 0] = name
    data = fixture.root / "Data"
    data.mkdir(parents=True, exist_ok=True)
    savemat(data / "AllImages_release.mat", {"AllImages_release": cells})
    savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.full((1, len(names)), 15.0)})


def _kadid10k(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    lines = ["dist_img,ref_img,dmos,var"]
    references = math.ceil(n / 4)
    for ref in range(1, references + 1):
        _noise_image(fixture.root / "images" / f"I{ref:02d}.png", rng)
    for i in range(n):
        ref, kind, level = 1 + i // 4, 1 + (i % 4) // 2, 1 + i % 2
        name = f"I{ref:02d}_{kind:02d}_{level:02d}.png"
        score = round(float(rng.uniform(1, 5)), 2)
        lines.append(f"{name},I{ref:02d}.png,{score},{round(float(rng.uniform(0, 1)), 3)}")
        fixture.images[name] = score
        _image(fixture, name, fixture.root / "images" / name, rng)
    bad = ["I01_09_01.png,I01.png,bad,0.5", "I01_09_02.png,I01.png"]
    _inject(fixture, "dmos.csv", lines, [bad[i % 2] for i in range(bad_rows)])
    _write(fixture.root / "dmos.csv", lines)


def _flickr_aes(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    train_workers = [_amt_worker(rng) for _ in range(4)]
    names = [_flickr_name(rng) for _ in range(n)]
    lines = ["worker, imagePair, score"]
    for index, name in enumerate(names):
        # A third of the images are rated by a test worker (and by training workers, as in the real data).
        raters = _raters(rng, train_workers)
        if index % 3 == 0:
            raters.append(FLICKR_TEST_WORKERS[index // 3 % len(FLICKR_TEST_WORKERS)])
        for worker in raters:
            score = int(rng.integers(1, 6))
            fixture.ratings[(name, worker)] = float(score)
            lines.append(f"{worker},{name},{score}")
        _image(fixture, name, fixture.root / "40K" / name, rng)
    bad = [f"{train_workers[0]},{names[0]},five", f"{train_workers[0]},{names[0]},3,extra"]
    # As distributed, the file name starts with a space.
    file_name = " FLICKR-AES_image_labeled_by_each_worker.csv"
    _inject(fixture, file_name, lines, [bad[i % 2] for i in range(bad_rows)])
    _write(fixture.root / file_name, lines)
    means = {name: np.mean([s for (i, _), s in fixture.ratings.items() if i == name]) for name in names}
    _write(fixture.root / "FLICKR-AES_image_score.txt", [f"{name} {mean:.4f}" for name, mean in means.items()])


def _real_cur(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    albums = ["album_1", "album_2", "album_10"]
    for i in range(n):
        album, score = albums[i % len(albums)], int(rng.integers(1, 6))
        name = f"IMG_{1000 + i}.jpg"
        fixture.ratings[(f"{album}/{name}", album)] = float(score)
        _image(fixture, f"{album}/{name}", fixture.root / album / str(score) / name, rng)
    (fixture.root / "album_1" / "Thumbs.db").write_bytes(b"not an image")
    for i in range(bad_rows):
        _noise_image(fixture.root / albums[i % len(albums)] / f"bad{i}" / "IMG_9.jpg", rng)
        fixture.bad_rows.append((f"{albums[i % len(albums)]}/bad{i}", None))


def _lapis(fixture: DatabaseFixture, rng: np.random.Generator, n: int, bad_rows: int) -> None:
    artists = ["boris-kustodiev_shells", "claude-monet_water-lilies", "andré-derain_the-trees"]
    names = [f"{artists[i % 3]}-{1900 + i}.jpg" for i in range(n)]
    participants = [str(p) for p in rng.choice(np.arange(1, 600), 4, replace=False)]
    splits = _splits(rng, n, ("train", "validation", "test"))
    piaa = ["image_id,image_filename,participant_id,rating,age,nationality,demo_gender,demo_edu,demo_colorblind,"
            "Art Interest VAIAK,artist,style,genre"]  # fmt: skip
    giaa: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for index, (name, split) in enumerate(zip(names, splits)):
        image_id = str(5000 + index)
        ratings = []
        for participant in _raters(rng, participants):
            rating = int(rng.integers(0, 101))
            ratings.append(rating)
            fixture.ratings[(image_id, participant)] = float(rating)
            piaa.append(
                f"{image_id},{name},{participant},{rating},25,Belgian,female,master,no,4.5,x,Impressionism,landscape"
            )
        fixture.images[image_id] = float(np.mean(ratings))
        fixture.splits[image_id] = split
        giaa[split].append(f"{image_id},{name},{np.mean(ratings)},Impressionism,landscape")
        _image(fixture, image_id, fixture.root / "images" / name, rng)
    bad = [
        f"5000,{names[0]},{participants[0]},lots,25,Belgian,female,master,no,4.5,x,Impressionism,landscape",
        "5000,x.jpg",
    ]
    _inject(fixture, "LAPIS_PIAA.csv", piaa, [bad[i % 2] for i in range(bad_rows)])
    annotation = fixture.root / "annotation"
    _write(annotation / "LAPIS_PIAA.csv", piaa, encoding="latin-1")  # not UTF-8, as some releases
    for split, file_name in (("train", "Trainsplit"), ("validation", "Valsplit"), ("test", "Testsplit")):
        lines = ["image_id,image_filename,mean_response,style,genre", *giaa[split]]
        _write(annotation / f"LAPIS_GIAA_{file_name}.csv", lines, encoding="latin-1")


_WRITERS: dict[str, tuple[str, Callable[[DatabaseFixture, np.random.Generator, int, int], None]]] = {
    "ava": ("AVA_dataset", _ava),
    "aadb": ("AADB", _aadb),
    "tad66k": ("TAD66K", _tad66k),
    "para": ("PARA", _para),
    "koniq10k": ("koniq10k", _koniq10k),
    "spaq": ("SPAQ", _spaq),
    "livec": ("ChallengeDB_release", _livec),
    "kadid10k": ("kadid10k", _kadid10k),
    "flickr-aes": ("FLICKR-AES", _flickr_aes),
    "real-cur": ("REAL-CUR", _real_cur),
    "lapis": ("LAPIS", _lapis),
}
FIXTURE_NAMES = tuple(_WRITERS)
