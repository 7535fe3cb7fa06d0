"""`taskvec-aesthetics demo --quick`: the whole library end to end on real photos, offline, on the CPU."""

import json
import os
import re
from pathlib import Path

import pytest

from taskvec_aesthetics.benchmark import METHODS
from taskvec_aesthetics.cli import main
from taskvec_aesthetics.demo.runner import DemoConfig, _base_and_bank
from taskvec_aesthetics.demo.world import build_world


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["demo", "--quick", "--output", str(out), "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "our default" in printed and "identical" in printed and "NOT IDENTICAL" not in printed
    record = json.loads((out / "demo.json").read_text())
    assert record["export_check"]["identical"] and not record["bank_from_cache"]
    assert record["export_check"]["coefficients"]["bytes"] < 64 * 1024
    results = json.loads((out / "results.json").read_text())
    methods = {row["method"] for row in results["summary"]}
    assert set(METHODS) - {"single"} <= methods and any(m.startswith("single:") for m in methods)
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
    *_, from_cache, folder = _base_and_bank(config, build_world(config.world), cache, progress=False)
    assert from_cache and folder.parent == cache / "demo"
