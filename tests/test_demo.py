"""`taskvec-aesthetics demo --quick`: the whole library end to end on real photos, offline, on the CPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskvec_aesthetics.cli import main
from taskvec_aesthetics.demo.config import DemoConfig
from taskvec_aesthetics.demo.runner import base_and_bank
from taskvec_aesthetics.demo.world import build_world
from taskvec_aesthetics.experiments.config import METHODS

# The other run: one worker (this process runs the machine's count), an empty cache, and a home folder of its own.
_OTHER_RUN = """
import dataclasses, sys
from taskvec_aesthetics.demo.config import DemoConfig
from taskvec_aesthetics.demo.runner import run_demo
run_demo(dataclasses.replace(DemoConfig.preset("quick"), workers=1), sys.argv[1], progress=False)
"""


def numbers(value: Any) -> Any:
    """What a run computed, without what differs between identical computations: timings, worker count, folders
    (and the sizes of files that name them), and the task files' checksums (see the test)."""
    if isinstance(value, dict):
        skip = ("timings", "workers", "folder", "bytes", "sha256", "seconds", "seconds_per_fit")
        return {k: numbers(v) for k, v in value.items() if k not in skip and not k.endswith("_s")}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


@pytest.mark.slow
def test_quick_demo_end_to_end_and_identical_in_another_process(tmp_path, capsys):
    # Started first, so that both runs share the machine: the suite pays for one run and a bit.
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TASKVEC_AESTHETICS_CACHE", "OMP_NUM_THREADS")}
    env |= {"HOME": str(home), "XDG_CACHE_HOME": str(xdg)}
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_RUN, str(tmp_path / "other")], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _check_quick_demo(tmp_path, capsys)
        log, _ = other.communicate(timeout=900)
    finally:
        other.kill()
    assert other.returncode == 0, log[-3000:]
    first, second = tmp_path / "out", tmp_path / "other"
    for name in ("results.json", "demo.json"):
        assert numbers(json.loads((first / name).read_text())) == numbers(json.loads((second / name).read_text()))
    # The other run cached its base and bank under XDG_CACHE_HOME and wrote nothing into the home folder's ~/.cache.
    assert (xdg / "taskvec-aesthetics" / "demo").is_dir() and not (home / ".cache").exists()


def _check_quick_demo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["demo", "--quick", "--output", str(out), "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "our default" in printed and "identical" in printed and "NOT IDENTICAL" not in printed
    record = json.loads((out / "demo.json").read_text())
    assert record["export_check"]["identical"] and not record["bank_from_cache"]
    assert record["export_check"]["coefficients"]["bytes"] < 64 * 1024
    results = json.loads((out / "results.json").read_text())
    methods = {row["method"] for row in results["summary"]}
    assert set(METHODS) - {"single", "one_pass"} <= methods and any(m.startswith("single:") for m in methods)
    assert {row["k"] for row in results["summary"]} == set(DemoConfig.preset("quick").shots)
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG" and (out / "results.md").is_file()
    caption = (out / "results.md").read_text().rstrip().splitlines()[-1]  # what the table's numbers are
    assert f"Test SROCC of {len(record['users'])} simulated raters" in caption
    assert (
        f"noise ceiling (their ratings against their true utility, mean over raters) is {record['noise_ceiling']:.3f}"
        in caption
    )
    assert len(record["bank"]) == 7 and all(task["metrics"] for task in record["bank"])
    # the README's quickstart runs as written on the demo's output
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    quickstart = re.search(r"## Quickstart.*?```python\n(.*?)```", readme, re.S).group(1)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(quickstart.replace("demo_output/", "out/"), "README quickstart", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert namespace["again"].personalization.coefficients.allclose(namespace["mine"].personalization.coefficients)
    # a second run finds the base and bank in the cache
    config = DemoConfig.preset("quick")
    *_, from_cache, folder = base_and_bank(config, build_world(config.world), cache, progress=False)
    assert from_cache and folder.parent == cache / "demo"
