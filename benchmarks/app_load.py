"""Load test of the web app on loopback: concurrent visitors rate photos and personalize, against a real server.

Starts `taskvec-aesthetics app` (the demo's base, bank and pool, or the given ones) on a free loopback port in its own
process, then runs ``--visitors`` concurrent visitors, each a Gradio client with its own session: it rates
``--ratings`` photos (stars drawn at random) and presses Personalize once, then stops. Every request's latency is
timed; an error is a failed request or a page message of an unexpected failure. The server's resident memory is read
before the visitors arrive and after they are done (their sessions still open), and the app's temp folder is sized.

    python benchmarks/app_load.py [--visitors 20] [--ratings 20] [--cache-dir DIR | --model M --bank B --photos P]

Prints one JSON line and a table; ``--output`` writes both (`.json`, `.md`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, port: int, temp: Path) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, "-m", "taskvec_aesthetics.cli", "app", "--port", str(port)]
    for flag in ("model", "bank", "photos", "cache_dir"):
        if getattr(args, flag):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    # Its own temp folder, so the app's folder in it can be found and sized.
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
    began = time.perf_counter()
    log = (temp / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/config"
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited before serving:\n{(temp / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return server, time.perf_counter() - began
        except OSError:
            time.sleep(0.5)


def app_folder(temp: Path) -> Path | None:
    """The server's own folder, in the temp folder it was given."""
    return next(iter(temp.glob("taskvec-aesthetics-app-*")), None)


def visitor(url: str, number: int, ratings: int, record: list[dict[str, Any]]) -> None:
    from gradio_client import Client

    draw = random.Random(number)
    stars = [5, 1] + [draw.randint(1, 5) for _ in range(ratings - 2)]  # never all alike: that is a message
    client = Client(url, download_files=False, verbose=False)
    for value in stars[:ratings]:
        timed(record, "rate", lambda value=value: client.predict(api_name=f"/rate_{value}"))
    timed(record, "personalize", lambda: client.predict(api_name="/fit"))


def timed(record: list[dict[str, Any]], kind: str, call) -> None:
    began = time.perf_counter()
    error = None
    try:
        outputs = call()
        texts = [o for o in outputs if isinstance(o, str)] if isinstance(outputs, (list, tuple)) else []
        if any("Something went wrong" in text or 'role="alert"' in text for text in texts):
            error = next(text for text in texts if "alert" in text or "wrong" in text)[:300]
    except Exception as failure:  # noqa: BLE001 - every failure is counted and reported
        error = f"{type(failure).__name__}: {failure}"[:300]
    record.append({"kind": kind, "seconds": time.perf_counter() - began, "error": error})


def percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 95, 99)} | {
        "max": round(max(values), 3)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=20, help="concurrent visitors (default: 20)")
    parser.add_argument("--ratings", type=int, default=20, help="ratings per visitor before Personalize (default: 20)")
    parser.add_argument("--model"), parser.add_argument("--bank"), parser.add_argument("--photos")
    parser.add_argument("--cache-dir", help="the demo's cache (default: the usual one)")
    parser.add_argument("--output", type=Path, help="write <output>.json and <output>.md")
    args = parser.parse_args()

    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="app-load-"))
    server, startup = start_server(args, port, temp)
    try:
        process = psutil.Process(server.pid)
        rss_before = process.memory_info().rss
        record: list[dict[str, Any]] = []
        threads = [
            threading.Thread(target=visitor, args=(f"http://127.0.0.1:{port}/", n, args.ratings, record))
            for n in range(args.visitors)
        ]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        rss_after = process.memory_info().rss
        folder = app_folder(temp)
        folder_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder else None
    finally:
        server.terminate()  # SIGTERM, as a service manager stops it
        server.wait(timeout=60)
    removed = folder is not None and not folder.exists()
    shutil.rmtree(temp, ignore_errors=True)
    errors = [r["error"] for r in record if r["error"]]
    result = {
        "benchmark": "app_load",
        "visitors": args.visitors,
        "ratings_per_visitor": args.ratings,
        "requests": len(record),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 1),
        "throughput_requests_per_s": round(len(record) / wall, 2),
        "rate_latency_s": percentiles([r["seconds"] for r in record if r["kind"] == "rate"]),
        "personalize_latency_s": percentiles([r["seconds"] for r in record if r["kind"] == "personalize"]),
        "server_startup_s": round(startup, 1),
        "server_rss_mb_before": round(rss_before / 2**20),
        "server_rss_mb_after": round(rss_after / 2**20),
        "memory_per_session_mb": round((rss_after - rss_before) / 2**20 / args.visitors, 2),
        "app_folder_mb_per_session": round(folder_bytes / 2**20 / args.visitors, 3) if folder_bytes else None,
        "app_folder_removed_at_exit": removed,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}",
    }
    rate, fit = result["rate_latency_s"], result["personalize_latency_s"]
    table = "\n".join(
        [
            f"App load test: {args.visitors} concurrent visitors x ({args.ratings} ratings + 1 Personalize), loopback",
            "",
            "| requests | errors | wall (s) | throughput (req/s) | rate p50 / p95 / max (s) | "
            "personalize p50 / p95 / max (s) | memory per session (MB) | files per session (MB) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {len(record)} | {len(errors)} | {result['wall_s']} | {result['throughput_requests_per_s']} | "
            f"{rate['p50']} / {rate['p95']} / {rate['max']} | {fit['p50']} / {fit['p95']} / {fit['max']} | "
            f"{result['memory_per_session_mb']} | {result['app_folder_mb_per_session']} |",
            "",
            f"Server: started in {result['server_startup_s']} s, {result['server_rss_mb_before']} MB resident before "
            f"the visitors, {result['server_rss_mb_after']} MB after (sessions still open); its temp folder removed "
            f"at exit: {result['app_folder_removed_at_exit']}. Machine: {result['machine']}.",
        ]
    )
    print(json.dumps(result))
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        command = "python benchmarks/app_load.py " + " ".join(sys.argv[1:])
        args.output.with_suffix(".md").write_text(f"{table}\n\nCommand: `{command}`\n")


if __name__ == "__main__":
    main()
