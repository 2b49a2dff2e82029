"""Time that the report adds to `blindcheck check` on the bundled example (examples/fsdd_speaker_split.csv).

Runs the check once to fill a feature cache, then `check --no-report` and `check` (report on) from that cache, and
prints wall and CPU seconds of each and the report's own time. Usage: python benchmarks/report_time.py [--workers N]
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(args: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "blindcheck", *args], capture_output=True, text=True, cwd=EXAMPLES)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"check failed: {r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modalities", default="recording,spectral,prosodic")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = ["fsdd_speaker_split.csv", "--cache-dir", f"{tmp}/cache", "--workers", str(a.workers),
                  "--no-progress", "--modalities", a.modalities]
        run(["check", *common, "--out", f"{tmp}/warm", "--no-report"])
        w0, c0, _ = run(["check", *common, "--out", f"{tmp}/plain", "--no-report"])
        w1, c1, out = run(["check", *common, "--out", f"{tmp}/report"])
        own = re.search(r"in ([0-9.]+) s", out.splitlines()[-1])
        print(f"check --no-report (cached features): wall {w0:.1f} s, CPU {c0:.1f} s")
        print(f"check with report  (cached features): wall {w1:.1f} s, CPU {c1:.1f} s")
        print(f"report adds: wall {w1 - w0:+.1f} s, CPU {c1 - c0:+.1f} s; the report step itself: "
              f"{own.group(1) if own else '?'} s wall")


if __name__ == "__main__":
    main()
