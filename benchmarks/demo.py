#!/usr/bin/env python3
"""How long a newcomer waits: `aggregator demo --out DIR`, and the live demo's first Kursk item.

    .venv/bin/python benchmarks/demo.py [--runs 3] [--live] [--no-demo]

`demo`: wall and CPU seconds of `aggregator demo --out` on the bundled config, each
run in a fresh process and folder (the best run and the median). `--live`: starts
`aggregator run` on the bundled config (free ports, a fresh data folder) as
`scripts/run` does once installed, and reports the seconds until the feed server
answers and until /timelines/kursk.html lists its first report. The load average
is printed with each figure: on a busy machine they grow several-fold. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "aggregator.toml"
ENTRY = b'<li class="entry"'  # one report on a timeline page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of `aggregator demo`")
    parser.add_argument("--live", action="store_true", help="also time the live demo")
    parser.add_argument("--no-demo", action="store_true", help="skip `aggregator demo`")
    args = parser.parse_args(argv)
    result: dict[str, object] = {"cpus": os.cpu_count()}
    if not args.no_demo:
        runs = [time_demo() for _ in range(args.runs)]
        for run in runs:
            print(
                f"aggregator demo --out: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, "
                f"load {run['load_before']:.2f} before"
            )
        walls = [float(run["wall_s"]) for run in runs]
        result["demo"] = {"best_s": min(walls), "median_s": statistics.median(walls), "runs": runs}
    if args.live:
        live = time_live()
        print(
            f"aggregator run: serving after {live['serving_s']:.1f} s, first Kursk report "
            f"after {live['first_kursk_s']:.1f} s, load {live['load_before']:.2f} before"
        )
        result["live"] = live
    print(json.dumps(result))
    return 0


def load() -> float:
    return os.getloadavg()[0]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_demo() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        before, cpu = load(), children_cpu()
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "aggregator", "--config", str(CONFIG), "demo", "--out", tmp],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=without_overrides(),
        )
        wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(children_cpu() - cpu, 2),
        "load_before": round(before, 2),
        "load_after": round(load(), 2),
    }


def time_live(timeout: float = 300) -> dict[str, float]:
    """Seconds from starting `aggregator run` on the bundled config to its first Kursk item."""
    demo_port, feed_port = free_port(), free_port()
    base = f"http://127.0.0.1:{feed_port}"
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        config = Path(tmp) / "aggregator.toml"
        config.write_text(CONFIG.read_text().replace("127.0.0.1:8765", f"127.0.0.1:{demo_port}"))
        env = {
            **without_overrides(),
            "AGGREGATOR_DATA_DIR": str(Path(tmp) / "data"),
            "AGGREGATOR_DEMO__PORT": str(demo_port),
            "AGGREGATOR_SERVER__PORT": str(feed_port),
            "AGGREGATOR_PUBLISH__BASE_URL": base,
        }
        before = load()
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--config", str(config), "run"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        serving = first_kursk = float("nan")
        try:
            while time.perf_counter() - started < timeout and process.poll() is None:
                time.sleep(0.2)
                try:
                    page = httpx.get(f"{base}/timelines/kursk.html", timeout=5, trust_env=False)
                except httpx.TransportError:
                    continue
                if serving != serving:  # still NaN: the first answer of any kind
                    serving = time.perf_counter() - started
                if page.status_code == 200 and ENTRY in page.content:
                    first_kursk = time.perf_counter() - started
                    break
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    return {
        "serving_s": round(serving, 2),
        "first_kursk_s": round(first_kursk, 2),
        "load_before": round(before, 2),
        "load_after": round(load(), 2),
    }


def without_overrides() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
