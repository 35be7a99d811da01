"""How long the three-hour workshop route takes to run: its core cells, notebook by notebook.

The notebooks mark the route in their headings: each ``## N. Title`` ends in ``· core`` or
``· optional`` (so do ``## Exercises`` and ``## Answers, computed``), and a ``### …`` heading
marked the same way opens a subsection until the next ``##`` or ``###`` heading. A notebook
with no core section (06, 08, 10) is optional as a whole; in the others the cells before the
first ``##`` heading (imports, settings) are core too. For each notebook on the route this
script runs a copy that keeps every text cell but only the core code cells, top to bottom in a
fresh kernel (``bench/notebook_times.py``'s way), and records the wall time (kernel start
included), each core cell's time, the slowest three, the core prose a learner reads, and which
runs were cached ("warm") or trained ("cold"). A core cell that fails once the optional cells
are skipped stops the script with the notebook, the cell and the error: the route must run on
its own.

Run ``python bench/workshop_route.py`` on an idle machine with the profile's runs trained
(``python -m tinylm warm``) or imported; it saves
``data/reference/workshop_route_<profile label>.json`` (cpu-fp32 for the cpu profile's fp32
sizes) with the machine record taken at the start (date, commit, 1-minute load average).
``--only 01 05`` measures a subset, merged into the file. The timings mean something only with
one heavy job at a time: a second job on the same cores makes every figure noise.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat
import torch
from common import machine, save_result
from nbformat import NotebookNode
from notebook_times import (
    CELL_TIMEOUT,
    NotebookFailed,
    notebook_paths,
    run_watching_runs,
    saved_results,
    set_kernel_environment,
    text_words,
)

from tinylm.profiles import PROFILES, get_profile
from tinylm.reference import REFERENCE_DIR

MARK = re.compile(r" · (core|optional)\b")  # the first one in a heading is its mark
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in the kernel's tracebacks
SLOWEST = 3  # core cells listed per notebook


@dataclass(frozen=True)
class Route:
    """The workshop route through one notebook: its core code cells and the prose around them."""

    cells: list[int]  # indices of the core code cells, in order
    prose_words: int  # words of the core text: the intro's and the core sections'


def heading_marks(line: str, section: bool | None) -> tuple[bool | None, bool | None]:
    """(section's mark, open mark) after a ## or ### heading: True core, False optional."""
    found = MARK.search(line)
    mark = None if found is None else found.group(1) == "core"
    if line.startswith("## "):
        if mark is None:
            raise ValueError(f"a section heading without · core or · optional: {line!r}")
        return mark, mark
    return section, section if mark is None else mark  # ### marked: its own; unmarked: the ##'s


def marked_parts(notebook: NotebookNode) -> list[tuple[int, str, bool | None]]:
    """(cell index, text, mark) for each code cell and each markdown stretch between headings.

    The mark is the open section's or subsection's; None in the intro (before the first ``##``).
    """
    section: bool | None = None
    mark: bool | None = None
    parts = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            parts.append((index, cell.source, mark))
            continue
        if cell.cell_type != "markdown":
            continue
        lines: list[str] = []
        for line in cell.source.splitlines():
            if line.startswith(("## ", "### ")):
                parts.append((index, "\n".join(lines), mark))
                lines = []
                section, mark = heading_marks(line, section)
            lines.append(line)
        parts.append((index, "\n".join(lines), mark))
    return parts


def workshop_route(notebook: NotebookNode) -> Route:
    """The notebook's core code cells and core prose words, from its headings' marks."""
    parts = marked_parts(notebook)
    on_route = any(mark for _, _, mark in parts)  # no core section: optional as a whole
    core = [(i, text) for i, text, mark in parts if (on_route if mark is None else mark)]
    return Route(
        cells=[i for i, _ in core if notebook.cells[i].cell_type == "code"],
        prose_words=sum(
            text_words(text) for i, text in core if notebook.cells[i].cell_type == "markdown"
        ),
    )


def route_copy(notebook: NotebookNode, cells: list[int]) -> NotebookNode:
    """The notebook with all its text cells but only the given code cells, outputs cleared."""
    copy = deepcopy(notebook)
    copy.cells = [
        cell for index, cell in enumerate(copy.cells) if cell.cell_type != "code" or index in cells
    ]
    for cell in copy.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)  # the committed run's timestamps
    return copy


def cell_seconds(cell: NotebookNode) -> float:
    """How long the kernel ran the cell, from nbclient's timestamps (0 for an empty cell)."""
    timing = cell.metadata.get("execution")
    if not timing:
        return 0.0
    start = datetime.fromisoformat(timing["iopub.execute_input"])
    end = datetime.fromisoformat(timing["shell.execute_reply"])
    return (end - start).total_seconds()


def first_line(source: str) -> str:
    """The cell's first line that says what it does (nbval's markers skipped)."""
    lines = [line for line in source.splitlines() if not line.startswith("# NBVAL_")]
    return (lines or [""])[0][:80]


def route_failure(path: Path, notebook: NotebookNode, route: Route, error: NotebookFailed) -> str:
    """The message for a route that stopped: the notebook, the failing core cell, the error."""
    stderr = ANSI.sub("", error.stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    rule = "-" * 18  # nbclient's frame around the failing cell's source
    failed = [
        i
        for i in route.cells
        if f"following cell:\n{rule}\n{notebook.cells[i].source}\n{rule}\n" in stderr
    ]
    if not failed:
        tail = "\n".join(lines[-20:])
        return f"{path.name}: the core route stopped, the cell unknown; nbconvert said:\n{tail}"
    cell = failed[0]
    return (
        f"{path.name}: core cell {cell} ({first_line(notebook.cells[cell].source)!r}) fails "
        f"when the optional cells are skipped:\n  {lines[-1]}"
    )


def measure(path: Path, route: Route, timeout: int) -> dict:
    """Run the notebook's route in a fresh kernel and time it, cell by cell."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="workshop-route-") as folder:
        copy = Path(folder) / path.name
        nbformat.write(route_copy(notebook, route.cells), copy)
        try:
            seconds, attempts, trained = run_watching_runs(copy, inplace=True, timeout=timeout)
        except NotebookFailed as error:
            sys.exit(route_failure(path, notebook, route, error))
        executed = [c for c in nbformat.read(copy, as_version=4).cells if c.cell_type == "code"]
    times = {index: cell_seconds(cell) for index, cell in zip(route.cells, executed, strict=True)}
    slowest = sorted(times, key=times.get, reverse=True)[:SLOWEST]
    return {
        "notebook": path.name,
        "wall_seconds": round(seconds, 1),
        "cell_seconds": round(sum(times.values()), 1),
        "core_code_cells": len(route.cells),
        "slowest_cells": [
            {
                "cell": index,
                "source": first_line(notebook.cells[index].source),
                "seconds": round(times[index], 1),
            }
            for index in slowest
        ],
        "core_prose_words": route.prose_words,
        "trained": trained,
        "caches": "cold" if trained else "warm",
        "attempts": attempts,
    }


def totals(results: list[dict]) -> dict:
    """The route's figures summed over the notebooks."""
    return {
        "notebooks": len(results),
        "wall_seconds": round(sum(r["wall_seconds"] for r in results), 1),
        "cell_seconds": round(sum(r["cell_seconds"] for r in results), 1),
        "core_code_cells": sum(r["core_code_cells"] for r in results),
        "core_prose_words": sum(r["core_prose_words"] for r in results),
    }


def routes(paths: list[Path]) -> dict[Path, Route]:
    """Each notebook's route, all read before any runs (exits on a heading without its mark)."""
    found = {}
    for path in paths:
        try:
            found[path] = workshop_route(nbformat.read(path, as_version=4))
        except ValueError as error:
            sys.exit(f"{path.name}: {error}")
    return found


def print_table(results: list[dict], total: dict) -> None:
    """The figures, one notebook a line, and the route's totals."""
    print(f"{'notebook':<32}{'cells':>6}{'wall s':>9}{'cells s':>9}{'words':>7}  caches  slowest")
    for r in results:
        top = r["slowest_cells"][0] if r["slowest_cells"] else None
        slowest = f"cell {top['cell']} {top['seconds']:.1f} s: {top['source'][:40]}" if top else ""
        print(
            f"{r['notebook']:<32}{r['core_code_cells']:>6}{r['wall_seconds']:>9.1f}"
            f"{r['cell_seconds']:>9.1f}{r['core_prose_words']:>7}  {r['caches']:<6}  {slowest}"
        )
    print(
        f"{'total':<32}{total['core_code_cells']:>6}{total['wall_seconds']:>9.1f}"
        f"{total['cell_seconds']:>9.1f}{total['core_prose_words']:>7}"
    )


def main() -> None:
    """Time the workshop route of the chosen notebooks in one profile and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument(
        "--only", nargs="+", metavar="NN", help="notebook numbers, e.g. 01 05 (default: all)"
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=CELL_TIMEOUT,
        help="seconds a cell may take before the notebook is run again (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON file (default: data/reference/workshop_route_<profile>.json, with cpu-fp32 "
        "for the cpu profile's fp32 sizes)",
    )
    args = parser.parse_args()
    label = get_profile(args.profile).label  # cpu-fp32 where this machine trains in fp32
    out = args.out or REFERENCE_DIR / f"workshop_route_{label}.json"
    set_kernel_environment(args.profile)
    record = machine(torch.device("cpu"))  # at the start: date, commit, load average
    results = saved_results(out)
    for path, route in routes(notebook_paths(args.only)).items():
        if not route.cells:
            print(f"{path.name}: no core cells (optional as a whole), skipped", flush=True)
            continue
        results[path.name] = figures = measure(path, route, args.timeout)
        ordered = [results[name] for name in sorted(results)]
        save_result(
            {
                "benchmark": "workshop_route",
                "machine": record,
                "profile": args.profile,
                "results": ordered,
                "totals": totals(ordered),
            },
            out,
        )
        print(f"{path.name}: {figures['wall_seconds']:.0f} s, saved in {out}", flush=True)
    if results:
        ordered = [results[name] for name in sorted(results)]
        print_table(ordered, totals(ordered))


if __name__ == "__main__":
    main()
