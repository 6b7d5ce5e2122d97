"""Start-up time of the ``hf-mtl`` command line (issue 13, item 5: ``--help`` and ``combiners`` well under 2 s).

Runs each command ``--repeats`` times in a fresh interpreter and prints the median and minimum wall time, next to
a bare ``python -c pass`` and ``python -c "import torch"`` for scale, and checks that neither command loads torch
or transformers (``hf_mtl/__init__.py`` imports its names on first access; the combiners import torch only when
called).

    python benchmarks/cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "hf-mtl --help": [sys.executable, "-m", "hf_mtl.cli", "--help"],
    "hf-mtl combiners": [sys.executable, "-m", "hf_mtl.cli", "combiners"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}
LOADS_HEAVY = ("import sys, runpy; sys.argv = ['hf-mtl', {arg!r}]\n"
               "try:\n    runpy.run_module('hf_mtl.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
               "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules))")


def wall_times(command: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def heavy_modules(arg: str) -> list[str]:
    """The heavy packages the CLI has loaded once ``arg`` ran."""
    out = subprocess.run([sys.executable, "-c", LOADS_HEAVY.format(arg=arg)], capture_output=True, text=True,
                         check=True).stdout
    return [m for m in out.split("HEAVY=")[-1].strip().split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for name, command in COMMANDS.items():
        times = wall_times(command, args.repeats)
        rows[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3)}
        print(f"{name:<28} median {rows[name]['median_s']:.3f} s   min {rows[name]['min_s']:.3f} s")
    for arg in ("--help", "combiners"):
        rows[f"hf-mtl {arg}"]["loads"] = heavy_modules(arg)
        print(f"hf-mtl {arg} loads: {rows[f'hf-mtl {arg}']['loads'] or 'neither torch nor transformers'}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
