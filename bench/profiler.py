"""Record a running server with py-spy while a benchmark measures it."""

from __future__ import annotations

import signal
import subprocess
import time

# Seconds py-spy needs to attach before the measured work starts.
ATTACH_SECONDS = 1.0


def start_profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid`, writing an SVG flame graph when `output` ends in .svg, else collapsed stacks."""
    output_format = "flamegraph" if output.endswith(".svg") else "raw"
    command = ["py-spy", "record", "--pid", str(pid), "--output", output, "--format", output_format]
    process = subprocess.Popen([*command, "--rate", "200", "--nonblocking"])
    time.sleep(ATTACH_SECONDS)
    return process


def stop_profiler(process: subprocess.Popen[bytes]) -> None:
    """Stop py-spy; it writes its output when interrupted, as after Ctrl-C."""
    process.send_signal(signal.SIGINT)
    process.wait()
