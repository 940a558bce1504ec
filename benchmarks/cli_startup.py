"""How fast the command line answers: `repeval --help` and an option error against a bare
`python -c "import typer"`, each as a whole process, timed round-robin in one run.

Goal: `repeval --help` <= 3x `import typer` (the CLI imports no torch, timm, scikit-learn or
matplotlib until a command runs). Also shown: the cost a command pays once it loads torch.

    python benchmarks/cli_startup.py [--reps 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c 'import typer'": [sys.executable, "-c", "import typer"],
    "repeval --help": [sys.executable, "-m", "repeval", "--help"],
    "repeval train --lr inf (option error)": [sys.executable, "-m", "repeval", "train", "--lr", "inf"],
    "python -c 'import torch, timm' (for scale)": [sys.executable, "-c", "import torch, timm"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("repeval") is None:
        print("note: the `repeval` script is not on PATH; timing `python -m repeval`, the same entry point")
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.reps):
        for name, command in CASES.items():
            started = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python -c 'import typer'"])
    print(f"{'command':45s} {'median s':>9s} {'ratio':>7s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:45s} {median:9.3f} {median / base:6.2f}x")
    ratio = statistics.median(times["repeval --help"]) / base
    print(f"\nrepeval --help / import typer = {ratio:.2f}x (goal <= 3x): {'met' if ratio <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
