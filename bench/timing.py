"""Run the timing benchmarks one after another and print their figures.

- delay: lateness of 1,000 delayed jobs, and of one due job after the queues were idle
  (bench/timing_delay.py);
- digest: 1,000 concurrent events into one digest window (bench/timing_digest.py);
- limiter: reserve and take operations per second, Redis and SQLite (bench/timing_limiter.py).

Each part starts its own servers, so they run in sequence: two at once would share the
cores and skew each other's figures. Usage: python bench/timing.py [--only delay,digest]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

PARTS = {
    "delay": "timing_delay.py",
    "digest": "timing_digest.py",
    "limiter": "timing_limiter.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to run")
    args = parser.parse_args()
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in PARTS]
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    failed = []
    for part in chosen:
        print(f"== {part}", flush=True)
        script = Path(__file__).with_name(PARTS[part])
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(part)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
