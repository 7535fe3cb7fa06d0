"""The user-facing commands: score, personalize and benchmark, end to end on saved models and files."""

import csv
import json
import socket
import subprocess
import sys
import time

import pytest
from hub_server import hub_env
from planted import images, user_ratings

from taskvec_aesthetics import AestheticModel
from taskvec_aesthetics.cli import build_parser, main
from taskvec_aesthetics.hub.references import Reference


@pytest.fixture(scope="module")
def saved(planted_world, tmp_path_factory):
    """The planted base and bank on disk, and a user's ratings CSV (image paths relative to the CSV)."""
    root = tmp_path_factory.mktemp("cli")
    planted_world.base.save_pretrained(root / "base")
    planted_world.bank.save_pretrained(root / "bank")
    photos = images(30, seed=11)
    (root / "photos").mkdir()
    for i, photo in enumerate(photos):
        photo.save(root / "photos" / f"p{i:02d}.png")
    _, ratings = user_ratings(photos, [0.75, 0.5, 0.0], noise=0.05, seed=3)
    with open(root / "ratings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score", "user_id"])
        for user in ("a", "b"):
            sign = 1 if user == "a" else -1
            writer.writerows([f"photos/p{i:02d}.png", f"{sign * float(r):.4f}", user] for i, r in enumerate(ratings))
    with open(root / "one_user.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        writer.writerows([f"photos/p{i:02d}.png", f"{float(r):.4f}"] for i, r in enumerate(ratings[:20]))
    return root


def test_score_prints_and_writes(saved, capsys, tmp_path):
    assert main(["score", str(saved / "photos"), "--model", str(saved / "base")]) == 0
    table = capsys.readouterr().out
    assert "p00.png" in table and len(table.strip().splitlines()) == 31
    assert (
        main(
            [
                "score",
                str(saved / "photos" / "p01.png"),
                "--model",
                str(saved / "base"),
                "--output",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "s.json").read_text())
    expected = AestheticModel.from_pretrained(saved / "base").score([saved / "photos" / "p01.png"])
    assert rows[0]["score"] == pytest.approx(float(expected[0]), abs=1e-6)
    assert (
        main(["score", str(saved / "photos"), "--model", str(saved / "base"), "--output", str(tmp_path / "s.txt")])
        == 2
    )
    assert "must end in .csv or .json" in capsys.readouterr().err


def test_personalize_command_exports_coefficients(saved, capsys, tmp_path):
    code = main(
        [
            "personalize",
            "--ratings",
            str(saved / "one_user.csv"),
            "--model",
            str(saved / "base"),
            "--bank",
            str(saved / "bank"),
            "--output",
            str(tmp_path / "mine"),
            "--steps",
            "10",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "personalized on 20 ratings" in printed and "5-fold CV on 20 ratings" in printed
    assert (tmp_path / "mine" / "coefficients.safetensors").is_file()
    model = AestheticModel.from_pretrained(tmp_path / "mine")
    base = AestheticModel.from_pretrained(saved / "base")
    photo = [saved / "photos" / "p25.png"]
    assert float((model.score(photo) - base.score(photo)).abs()) > 1e-4
    assert (
        main(
            [
                "personalize",
                "--ratings",
                str(tmp_path / "none.csv"),
                "--model",
                str(saved / "base"),
                "--bank",
                str(saved / "bank"),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def test_benchmark_command_on_a_ratings_file(saved, capsys, tmp_path):
    code = main(
        [
            "benchmark",
            "--ratings",
            str(saved / "ratings.csv"),
            "--model",
            str(saved / "base"),
            "--bank",
            str(saved / "bank"),
            "--shots",
            "10",
            "--repeats",
            "1",
            "--methods",
            "default",
            "uniform",
            "--workers",
            "2",
            "--output",
            str(tmp_path / "bench"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert {r["method"] for r in result["summary"]} == {"default", "uniform"} and result["config"]["workers"] == 2
    assert {t["user_id"] for t in result["trials"]} == {"a", "b"}
    assert main(["benchmark", "--database", "flickr-aes", "--model", "m", "--bank", "b"]) == 2
    assert "--root" in capsys.readouterr().err


def test_personalize_without_bank_uses_the_bank_the_model_refers_to(saved, capsys, tmp_path):
    common = ["personalize", "--ratings", str(saved / "one_user.csv"), "--steps", "5"]
    assert main([*common, "--model", str(saved / "base"), "--output", str(tmp_path / "x")]) == 2
    assert "refers to no bank" in capsys.readouterr().err
    first = [*common, "--model", str(saved / "base"), "--bank", str(saved / "bank"), "--output", str(tmp_path / "a")]
    assert main(first) == 0, capsys.readouterr().err
    # A personalized model refers to its bank: personalizing it again needs no --bank and starts from its base.
    assert main([*common, "--model", str(tmp_path / "a"), "--output", str(tmp_path / "b"), "--seed", "1"]) == 0
    capsys.readouterr()
    again = AestheticModel.from_pretrained(tmp_path / "b")
    assert again.personalization.bank.source == Reference.local(saved / "bank")
    assert again.personalization.base.location == str((saved / "base").resolve())


def test_score_checks_its_inputs_before_loading_and_names_a_bank_given_as_model(saved, capsys):
    assert main(["score", str(saved / "photos" / "nope.png"), "--model", "no/such-model"]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "such-model" not in err
    assert main(["score", str(saved / "photos"), "--model", str(saved / "bank")]) == 2
    assert "is a task-vector bank" in capsys.readouterr().err


def test_global_options_go_before_or_after_the_subcommand(capsys):
    parser = build_parser()
    for argv in (["-q", "score", "x.jpg", "--model", "m"], ["score", "x.jpg", "--model", "m", "--quiet"]):
        args = parser.parse_args(argv)
        assert (args.quiet, args.verbose) == (True, False), argv
    args = parser.parse_args(["demo", "--verbose"])
    assert (args.quiet, args.verbose) == (False, True)
    assert main(["-v", "score", "x.jpg", "--model", "m", "-q"]) == 2
    assert "not allowed with argument -v/--verbose" in capsys.readouterr().err


def test_a_model_or_bank_that_is_nowhere_fails_at_once_naming_both(tmp_path, monkeypatch, capsys):
    (tmp_path / "my-models" / "base").mkdir(parents=True)
    (tmp_path / "my-models" / "bank").mkdir()
    monkeypatch.chdir(tmp_path)
    ratings = ["--ratings", "r.csv", "--output", "out"]
    cases = [
        (["personalize", "--model", "my-models/base-typo", *ratings], "'my-models/base-typo'", "'my-models/base'"),
        (["personalize", "--model", "my-models/base", "--bank", "my-models/bnak", *ratings], "'my-models/bnak'",
         "'my-models/bank'"),
        (["score", ".", "--model", "models/base"], "'models/base'", "'my-models/base'"),
        (["score", ".", "--model", "zzz"], "'zzz'", None),
    ]  # fmt: skip
    for argv, tried, suggestion in cases:
        start = time.perf_counter()
        assert main(argv) == 2
        elapsed = time.perf_counter() - start
        err = capsys.readouterr().err
        assert f"no folder {tried} here" in err and "no Hub repository of that name" in err, err
        assert (f"(did you mean {suggestion}?)" in err) if suggestion else "did you mean" not in err, err
        assert "Traceback" not in err and "huggingface.co" not in err
        assert elapsed < 5, f"{argv} took {elapsed:.1f} s"  # the Hub is not retried (offline: not asked at all)
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_is_asked_once_and_a_missing_repository_named(local_hub, tmp_path):
    """Online, in a fresh process (the Hub client reads its endpoint at import): a Hub that refuses connections
    costs one try, not a retry loop; a reachable Hub without the repository says so."""
    (tmp_path / "my-models" / "base").mkdir(parents=True)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    argv = ["-m", "taskvec_aesthetics.cli", "score", ".", "--model", "my-models/base-typo"]
    for endpoint, expected in ((closed, "the Hub could not be reached"), (local_hub.url, "no Hub repository")):
        env = {**hub_env(local_hub, tmp_path / "hf_home"), "HF_ENDPOINT": endpoint}
        start = time.perf_counter()
        result = subprocess.run([sys.executable, *argv], env=env, cwd=tmp_path, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        assert result.returncode == 2, result.stderr
        assert "no folder 'my-models/base-typo' here (did you mean 'my-models/base'?)" in result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert elapsed < 15, f"{endpoint}: {elapsed:.1f} s"  # generous for a busy machine; a retry loop takes 30+ s


@pytest.mark.slow  # a fresh process that imports torch
def test_quiet_by_default_verbose_shows_transformers_bars(saved, monkeypatch, capsys):
    # tqdm reads TQDM_DISABLE when it is imported (the tests set it), so the bars are observed in a fresh process.
    import os
    import subprocess
    import sys

    photo = str(saved / "photos" / "p00.png")
    script = (
        "import sys\nfrom taskvec_aesthetics.cli import main\n"
        "for before, after in (([], []), (['--verbose'], []), (['--quiet'], []), ([], ['--verbose']), ([], ['-q'])):\n"
        "    print('RUN', *before, *after, file=sys.stderr, flush=True)\n"
        f"    assert main([*before, 'score', {photo!r}, '--model', {str(saved / 'base')!r}, *after]) == 0\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    err = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stderr
    default, verbose, quiet, verbose_after, quiet_after = err.split("RUN")[1:]
    assert "Loading weights" not in default and "Scoring" in default  # our own bar stays
    for verbose_run in (verbose, verbose_after):  # a global option works before or after the subcommand
        assert "Loading weights" in verbose_run and "Scoring" in verbose_run
    for quiet_run in (quiet, quiet_after):
        assert "Loading weights" not in quiet_run and "Scoring" not in quiet_run
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert main(["score", photo, "--model", str(saved / "base")]) == 0
    assert "Scoring" not in capsys.readouterr().err


def test_help_texts_match_the_library(capsys):
    from taskvec_aesthetics.constants import STORAGE_DTYPE_NAMES
    from taskvec_aesthetics.data.ratings import IMAGE_COLUMNS, SCORE_COLUMNS, USER_COLUMN
    from taskvec_aesthetics.task_vectors.bank_files import STORAGE_DTYPES

    assert STORAGE_DTYPE_NAMES == tuple(STORAGE_DTYPES)
    for command, names in (("personalize", (*IMAGE_COLUMNS, *SCORE_COLUMNS)), ("benchmark", (USER_COLUMN,))):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text for name in names), (command, names)
        assert "resolves against the CSV's folder" in text
    assert main(["demo", "--help"]) == 0
    text = capsys.readouterr().out
    assert "TASKVEC_AESTHETICS_CACHE" in text and "XDG_CACHE_HOME" in text


def test_personalize_flags_are_the_personalizer_config_fields():
    import dataclasses

    from taskvec_aesthetics.cli import build_parser
    from taskvec_aesthetics.personalization.config import PersonalizerConfig

    parser = build_parser()
    personalize = parser._subparsers._group_actions[0].choices["personalize"]
    flags = {option for action in personalize._actions for option in action.option_strings}
    fields = {f.name for f in dataclasses.fields(PersonalizerConfig) if f.metadata.get("cli", True)}
    assert {"--" + name.replace("_", "-") for name in fields} <= flags
    assert "--progress" not in flags  # set by --quiet and TQDM_DISABLE instead
    args = parser.parse_args(
        ["personalize", "--ratings", "r.csv", "--model", "m", "--output", "o", "--steps", "7", "--calibrate",
         "--candidates", "single", "layer", "--tolerance", "0.5"]
    )  # fmt: skip
    assert (args.steps, args.calibrate, args.candidates, args.tolerance) == (7, True, ["single", "layer"], 0.5)
    assert not hasattr(args, "granularity")  # not given: the preset's value stays
    with pytest.raises(SystemExit):
        parser.parse_args(["personalize", "--ratings", "r", "--model", "m", "--output", "o", "--granularity", "x"])


def test_benchmark_and_demo_flags_are_their_config_fields():
    import dataclasses

    from taskvec_aesthetics.cli import build_parser
    from taskvec_aesthetics.commands.experiments import run_benchmark, run_demo
    from taskvec_aesthetics.commands.options import config_values
    from taskvec_aesthetics.demo.config import DemoConfig, WorldConfig
    from taskvec_aesthetics.experiments.config import METHODS, BenchmarkConfig
    from taskvec_aesthetics.utils.fields import field_kind

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    flagged = {}
    for command, config_class, prefix in (
        ("benchmark", BenchmarkConfig, ""),
        ("demo", DemoConfig, ""),
        ("demo", WorldConfig, "world-"),
    ):
        flags = {option for action in commands[command]._actions for option in action.option_strings}
        # Every field a flag can hold (nested configs cannot: they are the other groups, or the recipes' options).
        fields = [f for f in dataclasses.fields(config_class) if f.metadata.get("cli", True) and field_kind(f).scalar]
        assert {"--" + prefix + f.name.replace("_", "-") for f in fields} <= flags, command
        flagged[config_class] = {f.name for f in fields}
    assert {f.name for f in dataclasses.fields(BenchmarkConfig)} - flagged[BenchmarkConfig] == {
        "personalizer", "paper", "progress"
    }  # fmt: skip
    assert {f.name for f in dataclasses.fields(DemoConfig)} - flagged[DemoConfig] == {"world"}
    assert flagged[WorldConfig] == {f.name for f in dataclasses.fields(WorldConfig)}

    benchmark = ["benchmark", "--ratings", "r.csv", "--model", "m", "--bank", "b"]
    args = parser.parse_args(benchmark)
    assert args.run is run_benchmark
    # The flags that existed keep their defaults: every method, k of 10 and 100, and 10 repeats (the class says 1).
    assert config_values(args, BenchmarkConfig) == {"repeats": 10}
    default = BenchmarkConfig(**config_values(args, BenchmarkConfig))
    assert (default.methods, default.shots, default.seed, default.workers) == (METHODS, (10, 100), 0, 1)
    args = parser.parse_args([*benchmark, "--shots", "5", "20", "--methods", "default", "init", "--transductive"])
    assert config_values(args, BenchmarkConfig) == {
        "repeats": 10, "shots": (5, 20), "methods": ("default", "init"), "transductive": True
    }  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args([*benchmark, "--methods", "magic"])

    args = parser.parse_args(["demo", "--quick", "--world-num-users", "2", "--world-seed", "3", "--seed", "1"])
    assert args.run is run_demo and args.quick
    assert config_values(args, WorldConfig, prefix="world") == {"num_users": 2, "seed": 3}
    assert config_values(args, DemoConfig) == {"seed": 1}
    assert config_values(parser.parse_args(["demo"]), DemoConfig) == {}  # the preset's values stay


def test_bad_config_values_fail_naming_the_field_and_the_value(capsys, tmp_path):
    """Checked by the config class before any model is loaded (the model and bank named here do not exist)."""
    model, bank = tmp_path / "model", tmp_path / "bank"
    model.mkdir(), bank.mkdir()
    benchmark = ["benchmark", "--ratings", "r.csv", "--model", str(model), "--bank", str(bank)]
    for flags, message in (
        (["--shots", "1", "10"], "BenchmarkConfig.shots must be ints >= 2, received (1, 10)"),
        (["--repeats", "0"], "BenchmarkConfig.repeats must be >= 1, received 0"),
        (["--head-learning-rate", "0"], "BenchmarkConfig.head_learning_rate must be > 0, received 0.0"),
    ):
        assert main([*benchmark, *flags, "--device", "cpu"]) == 2
        assert message in capsys.readouterr().err
    assert main(["demo", "--world-image-size", "8"]) == 2
    assert "WorldConfig.image_size must be >= 16, received 8" in capsys.readouterr().err
    assert main(["demo", "--quick", "--world-pool-size", "1"]) == 2
    assert "WorldConfig.pool_size must be >= 2, received 1" in capsys.readouterr().err


def test_every_help_is_fast_and_imports_neither_torch_nor_transformers():
    """Each `--help`, in a fresh process of its own, imports no heavy module; the top-level one is also timed."""
    import subprocess
    import sys
    import time

    from taskvec_aesthetics.cli import build_parser

    commands = [[], *([name] for name in build_parser()._subparsers._group_actions[0].choices)]
    assert ["finetune"] in commands and ["personalize"] in commands
    for command in commands:
        probe = (
            f"import sys\nfrom taskvec_aesthetics import cli\nassert cli.main({[*command, '--help']!r}) == 0\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'datasets', 'PIL', 'huggingface_hub') "
            "if m in sys.modules))"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "HEAVY []", command

    def seconds(*args: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, check=True)
        return time.perf_counter() - start

    python = min(seconds("-c", "pass") for _ in range(3))
    help_ = min(seconds("-m", "taskvec_aesthetics.cli", "finetune", "--help") for _ in range(3))
    # Generous on a busy machine; importing torch alone takes seconds (benchmarks/cli_startup.py measures them all).
    assert help_ - python < 1.0, (help_, python)


def test_every_public_name_of_the_lazy_package_resolves():
    import taskvec_aesthetics

    assert sorted(set(taskvec_aesthetics.__all__) - {"__version__"}) == sorted(taskvec_aesthetics._EXPORTS)
    for name in taskvec_aesthetics.__all__:
        assert getattr(taskvec_aesthetics, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        taskvec_aesthetics.nothing  # noqa: B018


def test_personalize_learns_from_a_folder_of_unlabeled_photos(saved, capsys, tmp_path):
    """--unlabeled DIR: the distilled candidate competes, learning from the folder's photos (never a rating)."""
    arguments = ["personalize", "--ratings", str(saved / "one_user.csv"), "--model", str(saved / "base")]
    arguments += ["--bank", str(saved / "bank"), "--output", str(tmp_path / "mine"), "--steps", "6"]
    assert main([*arguments, "--unlabeled", str(saved / "photos")]) == 0, capsys.readouterr().err
    assert "(90% interval " in capsys.readouterr().out
    info = json.loads((tmp_path / "mine" / "personalization.json").read_text())["info"]
    assert info["unlabeled"] == 30
    assert [row["candidate"] for row in info["cross_validation"]["candidates"]][-1] == "distil"
    assert main([*arguments, "--unlabeled", str(tmp_path / "nowhere")]) == 2
    assert "must be a folder of images" in capsys.readouterr().err
