"""The `taskvec-aesthetics` command: help, errors, init-base, finetune under `accelerate launch`, build-bank."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from database_fixtures import write_database_fixture
from tiny_models import encoder_configs, tiny_model
from transformers import AutoModel

from taskvec_aesthetics import AestheticModel, TaskVectorBank, model_fingerprint
from taskvec_aesthetics.cli import main
from taskvec_aesthetics.data import load_database

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def koniq(tmp_path_factory):
    # 21 images: 7 per official split, so the evaluation set does not divide between 2 processes.
    return write_database_fixture("koniq10k", tmp_path_factory.mktemp("data"), num_images=21)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    tiny_model("clip").save_pretrained(folder)
    return folder


def command_env():
    # The console scripts (accelerate, taskvec-aesthetics) live beside this interpreter.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("command", [[], ["init-base"], ["finetune"], ["build-bank"]])
def test_help_on_every_command(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: taskvec-aesthetics") and "--help" in out
    if command == ["finetune"]:
        assert "--lr-encoder" in out and "--freeze-prefix-blocks" in out and "{no,bf16,fp16}" in out


def test_user_errors_exit_with_code_2(tmp_path, koniq, base, capsys):
    assert main([]) == 2 and "required: COMMAND" in capsys.readouterr().err
    assert main(["finetune", "--database", "koniq10k"]) == 2
    assert "the following arguments are required: --root, --base, --output" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                "--database",
                "koniq10k",
                "--root",
                str(koniq),
                "--base",
                str(base),
                "--output",
                str(tmp_path / "run"),
                "--batch-size",
                "0",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip() == "error: FinetuneConfig.batch_size must be > 0, received 0"
    assert main(["finetune", "--database", "nodb", "--root", str(koniq), "--base", str(base), "--output", "x"]) == 2
    assert "error: Unknown database 'nodb'" in capsys.readouterr().err
    assert (
        main(["build-bank", str(tmp_path), "--base", str(tmp_path / "nobase"), "--output", str(tmp_path / "b")]) == 2
    )
    assert capsys.readouterr().err.startswith("error: expected a base model")
    assert not (tmp_path / "run").exists() and not (tmp_path / "b").exists()


def test_init_base_command(tmp_path, capsys):
    AutoModel.from_config(encoder_configs()["clip"]).save_pretrained(tmp_path / "encoder")
    assert (
        main(
            [
                "init-base",
                "--encoder",
                str(tmp_path / "encoder"),
                "--output",
                str(tmp_path / "base"),
                "--seed",
                "5",
                "--score-range",
                "0",
                "100",
            ]
        )
        == 0
    )
    assert "saved base model (clip_vision_model encoder" in capsys.readouterr().out
    model = AestheticModel.from_pretrained(tmp_path / "base")
    assert model.config.score_range == [0.0, 100.0] and (tmp_path / "base" / "preprocessor_config.json").is_file()


def test_two_process_finetune_counts_each_eval_example_once(tmp_path, koniq, base):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        "0",
        "-m",
        "taskvec_aesthetics.cli",
        "finetune",
        "--database",
        "koniq10k",
        "--root",
        str(koniq),
        "--base",
        str(base),
        "--output",
        str(run),
        "--batch-size",
        "2",
        "--epochs",
        "2",
        "--freeze-prefix-blocks",
        "1",
    ]
    # accelerate 1.15 starts several CPU processes on one machine through its torchrun path ("--multi_gpu") when
    # ACCELERATE_USE_CPU is set; "--cpu --num_processes 2" alone would start a single process.
    start = time.perf_counter()
    done = subprocess.run(
        command,
        env={**command_env(), "ACCELERATE_USE_CPU": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"2-process finetune: {wall:.1f} s")
    result = json.loads((run / "finetune_result.json").read_text())
    evaluation = load_database("koniq10k", koniq, split="validation")
    assert result["num_processes"] == 2 and len(evaluation) % 2 == 1
    assert result["prefix_cached"]  # each process encoded every image once; its sampler chose its rows
    assert result["num_eval_images"] == len(evaluation) == 7
    # 7 images, 2 per batch and process: 2 steps per epoch.
    assert result["steps"] == 4 and [h["step"] for h in result["history"]] == [2, 4]
    assert result["base"]["fingerprint"] == model_fingerprint(AestheticModel.from_pretrained(base))
    assert done.stdout.count("fine-tuned on 7 images") == 1  # printed by the main process only
    assert AestheticModel.from_pretrained(run / "model").config.score_range == [1.0, 10.0]


def test_build_bank_command(tmp_path, koniq, base, capsys):
    spaq = write_database_fixture("spaq", tmp_path / "data", num_images=20)
    common = ["--base", str(base), "--batch-size", "4", "--max-steps", "2"]
    assert (
        main(
            ["finetune", "--database", "koniq10k", "--root", str(koniq), "--output", str(tmp_path / "koniq"), *common]
        )
        == 0
    )
    assert (
        main(
            [
                "finetune",
                "--database",
                "spaq",
                "--root",
                str(spaq),
                "--output",
                str(tmp_path / "spaq"),
                "--eval-split",
                "test",
                *common,
            ]
        )
        == 0
    )
    runs = [str(tmp_path / "koniq"), str(tmp_path / "spaq")]
    assert main(["build-bank", *runs, "--base", str(base), "--output", str(tmp_path / "bank")]) == 0
    assert "saved TaskVectorBank(2 tasks ['koniq10k', 'spaq']" in capsys.readouterr().out
    base_model = AestheticModel.from_pretrained(base)
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank", base=base_model)
    assert bank.base_fingerprint == model_fingerprint(base_model)
    koniq_info, spaq_info = bank.info("koniq10k"), bank.info("spaq")
    assert (koniq_info.database, koniq_info.kind, koniq_info.num_images) == ("koniq10k", "iqa", 7)
    assert koniq_info.score_range == [0.0, 100.0] and "KonIQ-10k" in koniq_info.citation and koniq_info.licence
    assert set(koniq_info.metrics) == {"srocc", "plcc"} and spaq_info.num_images == len(load_database("spaq", spaq))
    tuned = AestheticModel.from_pretrained(tmp_path / "spaq" / "model")
    assert torch.allclose(bank["spaq"]["head.fc2.weight"], tuned.head.fc2.weight - base_model.head.fc2.weight)

    other = tmp_path / "other_base"
    tiny_model("clip", seed=7).save_pretrained(other)
    assert (
        main(
            [
                "finetune",
                "--database",
                "koniq10k",
                "--root",
                str(koniq),
                "--output",
                str(tmp_path / "stranger"),
                "--base",
                str(other),
                "--max-steps",
                "1",
                "--eval-split",
                "none",
            ]
        )
        == 0
    )
    assert (
        main(["build-bank", *runs, str(tmp_path / "stranger"), "--base", str(base), "--output", str(tmp_path / "b2")])
        == 2
    )
    err = capsys.readouterr().err
    assert f"error: run {tmp_path / 'stranger'} was fine-tuned from a base with fingerprint" in err
    assert not (tmp_path / "b2").exists()


def test_accelerate_config_and_paper_script(tmp_path, koniq):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / "accelerate_config.yaml"))
    assert (str(config.distributed_type), config.mixed_precision) == ("DistributedType.MULTI_GPU", "bf16")

    AutoModel.from_config(encoder_configs()["clip"]).save_pretrained(tmp_path / "encoder")
    env = {
        **command_env(),
        "WORK": str(tmp_path / "work"),
        "ENCODER": str(tmp_path / "encoder"),
        "DATABASES": "koniq10k",
        "KONIQ10K_ROOT": str(koniq),
        "TOP_BLOCKS": "1",
        "FINETUNE_ARGS": "--max-steps 2 --batch-size 4",
    }
    done = subprocess.run(
        ["bash", str(EXAMPLES / "build_paper_bank.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no GPU found: fine-tuning in one CPU process" in done.stderr
    base = AestheticModel.from_pretrained(tmp_path / "work" / "base")
    bank = TaskVectorBank.from_pretrained(tmp_path / "work" / "bank", base=base)
    assert bank.task_names == ["koniq10k"] and bank.info("koniq10k").num_images == 7
    # Only the top block (and the neck and head) was fine-tuned: the bank leaves the rest out.
    groups = base.parameter_groups()
    last = f"block.{base.adapter.num_blocks - 1}"
    assert {groups[name] for name in bank.parameter_names} <= {last, "neck", "head"}
    missing = subprocess.run(
        ["bash", str(EXAMPLES / "build_paper_bank.sh")],
        capture_output=True,
        text=True,
        env={**env, "DATABASES": "ava koniq10k"},
        check=False,
    )
    assert missing.returncode != 0 and "set AVA_ROOT" in missing.stderr
