"""How long each notebook takes to run top to bottom in a profile: the figures of docs/teaching.md.

Runs the notebooks one at a time in a fresh kernel with ``TINYLM_PROFILE`` set, times each, and
saves ``data/reference/notebook_times_<profile>.json`` (the machine record included). With
``--inplace`` the executed notebooks are written back (how the committed outputs are made);
without it they run on a copy and the files are left untouched. Written-back notebooks get text
progress bars (``TINYLM_PROGRESS=text``) reduced to their final state, and a cell tagged
``bertviz`` keeps a note in place of its ~0.3 MB of inline JavaScript.

A notebook that trains a run the first time it meets it (05, 08, 09, 10) is much faster once the
run is cached under runs/; the file records for each notebook which of its runs were already
there ("warm") and which it trained ("cold"). ``python -m tinylm warm`` trains them all ahead.
Run one heavy job at a time: a second job on the same cores makes every figure noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch
from common import machine, save_result
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from tinylm.download import PROJECT_ROOT
from tinylm.profiles import PROFILES, get_profile
from tinylm.progress import PROGRESS_ENV
from tinylm.reference import REFERENCE_DIR
from tinylm.runs import runs_dir

NOTEBOOKS = PROJECT_ROOT / "notebooks"
CELL_TIMEOUT = 900  # seconds a cell may take before the kernel is taken for hung


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, or those whose number is in `only` (e.g. ["03", "05"])."""
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in paths if p.name[:2] in only] if only else paths


def set_kernel_environment(profile: str) -> None:
    """Set what the kernels inherit: the profile, and text progress bars (saved as they ended)."""
    os.environ["TINYLM_PROFILE"] = profile
    os.environ[PROGRESS_ENV] = "text"


def cached_runs() -> set[str]:
    """Names of the finished runs under the runs folder (a final model saved)."""
    folder = runs_dir()
    return {p.parent.name for p in folder.glob("*/model")} if folder.is_dir() else set()


def saved_results(out: Path) -> dict[str, dict]:
    """The per-notebook results already in `out`, by notebook file name ({} if there is none)."""
    old = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    return {r["notebook"]: r for r in old.get("results", [])}


def text_words(text: str) -> int:
    """Words in a text, split at whitespace: how the prose of the notebooks is counted."""
    return len(text.split())


def prose_words(path: Path) -> int:
    """Words in the notebook's text cells: what a learner reads, code and outputs aside."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return sum(
        text_words("".join(cell["source"]))
        for cell in notebook["cells"]
        if cell["cell_type"] == "markdown"
    )


BERTVIZ_NOTE = (
    "<p><i>bertviz's interactive view is drawn here when the cell runs; the saved "
    "notebook leaves it out (its inline scripts weigh about 0.3 MB).</i></p>"
)


def tidy_outputs(path: Path) -> None:
    """Make saved outputs read well on GitHub: final progress bars, no inline bertviz scripts."""
    notebook = nbformat.read(path, as_version=4)
    notebook, _ = CoalesceStreamsPreprocessor().preprocess(notebook, {})  # keeps text after \r
    for cell in notebook.cells:
        if "bertviz" in cell.get("metadata", {}).get("tags", []):
            cell.outputs = [
                nbformat.v4.new_output(
                    "display_data",
                    data={"text/html": BERTVIZ_NOTE, "text/plain": "(bertviz view: run the cell)"},
                )
            ]
    nbformat.write(notebook, path)


class NotebookFailed(RuntimeError):
    """A notebook that stopped: the message ends with nbconvert's report, `stderr` has it all."""

    def __init__(self, path: Path, stderr: str) -> None:
        super().__init__(f"{path.name} failed:\n{stderr[-4000:]}")
        self.stderr = stderr


def run_notebook(path: Path, inplace: bool, timeout: int, attempts: int = 2) -> tuple[float, int]:
    """Execute one notebook with nbconvert in a fresh kernel: (wall time in s, attempts used).

    Now and then a kernel here finished a cell and the client never heard of it: both sat idle
    for good. A cell that exceeds `timeout` is taken for that, and the notebook run once more.
    """
    where = ["--inplace"] if inplace else ["--output-dir", tempfile.mkdtemp(prefix="notebook-")]
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        f"--ExecutePreprocessor.timeout={timeout}",
        *where,
        str(path),
    ]
    for attempt in range(1, attempts + 1):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        if done.returncode == 0:
            if inplace:
                tidy_outputs(path)
            return seconds, attempt
        if "CellTimeoutError" not in done.stderr or attempt == attempts:
            raise NotebookFailed(path, done.stderr)
        print(
            f"{path.name}: a cell waited over {timeout} s; running the notebook again", flush=True
        )
    raise AssertionError("unreachable")


def run_watching_runs(path: Path, inplace: bool, timeout: int) -> tuple[float, int, list[str]]:
    """`run_notebook`, and which runs it trained (not cached before): (seconds, attempts, runs)."""
    before = cached_runs()
    seconds, attempts = run_notebook(path, inplace, timeout)
    return seconds, attempts, sorted(cached_runs() - before)


def main() -> None:
    """Time the chosen notebooks in one profile and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument(
        "--only", nargs="+", metavar="NN", help="notebook numbers, e.g. 03 05 (default: all)"
    )
    parser.add_argument(
        "--inplace",
        action="store_true",
        help="write the executed notebooks back (the committed outputs)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=CELL_TIMEOUT,
        help="seconds a cell may take before the notebook is run again "
        "(default: %(default)s; raise it when runs train cold)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON file (default: data/reference/notebook_times_<profile>.json, with cpu-fp32 "
        "for the cpu profile's fp32 sizes)",
    )
    args = parser.parse_args()
    label = get_profile(args.profile).label  # cpu-fp32 where this machine trains in fp32
    out = args.out or REFERENCE_DIR / f"notebook_times_{label}.json"
    set_kernel_environment(args.profile)
    results = saved_results(out)
    for path in notebook_paths(args.only):
        seconds, attempts, trained = run_watching_runs(path, args.inplace, args.timeout)
        results[path.name] = {
            "notebook": path.name,
            "seconds": round(seconds, 1),
            "trained": trained,
            "caches": "cold" if trained else "warm",
            "prose_words": prose_words(path),
            "attempts": attempts,
        }
        print(
            f"{path.name:<36}{seconds:>8.0f} s"
            + (f"  (trained {', '.join(trained)})" if trained else ""),
            flush=True,
        )
        result = {
            "machine": machine(torch.device("cpu")),
            "profile": args.profile,
            "results": [results[name] for name in sorted(results)],
        }
        print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
