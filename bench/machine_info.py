"""The machine record on its own, with the precision the course resolves to there.

``python bench/machine_info.py --runs talk-30m`` (bench/gpu_check.sh runs it) writes the machine
record (`common.machine`) and the precision the named runs resolve to on it (dtype and
compile, as tinylm.train resolves "auto") to ``data/reference/machine_<device>.json`` (or under
``--out-dir``), its device slug in the name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import course_precision, machine, save_result, slug

from tinylm.hardware import best_device
from tinylm.reference import REFERENCE_DIR
from tinylm.runs import RUNS


def main() -> None:
    """Write the machine record and the named runs' resolved precision (bench/gpu_check.sh)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=best_device(), help="(default: %(default)s)")
    parser.add_argument(
        "--runs",
        nargs="*",
        default=[],
        choices=sorted(RUNS),
        help="runs whose resolved dtype and compile setting to record",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REFERENCE_DIR,
        help="folder of machine_<device>.json (default: data/reference)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine(device)
    precision = {run: course_precision(RUNS[run], device) for run in args.runs}
    print(
        f"{info['device_name']} ({device}), torch {info['torch']}, native bf16: "
        f"{info['native_bf16']}"
    )
    for run, resolved in precision.items():
        print(f"  {run}: dtype auto -> {resolved['dtype']}, compile auto -> {resolved['compile']}")
    out = args.out_dir / f"machine_{slug(device)}.json"
    result = {"benchmark": "machine", "machine": info, "precision": precision}
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
