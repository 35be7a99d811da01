"""The exercises' checks work both ways: every worked solution passes, every untouched stub fails.

`pytest exercises` runs in a subprocess (the stubs fail by design, so exercises/ is not in the
default run's testpaths): once with --solutions, where every check must pass, and once on the
stubs, where every check must fail with the stub's "not implemented yet" and nothing else.
"""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from exercises import train as exercise_train

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = (
    "attention",
    "bpe",
    "batches",
    "training",
    "cross_entropy",
    "gpt",
    "adamw",
    "sampling",
    "sft_mask",
    "kv_cache",
    "rope",
)
# "write get_batch in exercises/batches.py", or a method: "write GPT.forward in exercises/gpt.py"
STUB = re.compile(
    r"NotImplementedError: not implemented yet: write ([\w.]+) in exercises/(\w+)\.py"
)


def run_exercises(tmp_path: Path, *args: str) -> tuple[int, list[ET.Element], str]:
    """Run pytest on exercises/ from the project root: (exit code, test cases, output)."""
    report = tmp_path / "report.xml"
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    # nbval (the notebooks' plugin, and the --nbval-lax of addopts) is not needed here and
    # costs seconds of imports.
    command = [
        sys.executable,
        "-m",
        "pytest",
        "exercises",
        *args,
        "-q",
        "--tb=short",
        "-p",
        "no:nbval",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        f"--junitxml={report}",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert report.is_file(), f"pytest wrote no report (exit code {result.returncode}):\n{output}"
    return result.returncode, list(ET.parse(report).getroot().iter("testcase")), output


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    return run_exercises(tmp_path_factory.mktemp("solutions"), "--solutions")


def edited_stubs() -> list[str]:
    """The committed stubs that differ from git's HEAD (a learner at work); [] without git."""
    paths = [f"exercises/{name}.py" for name in EXERCISES]
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:  # not a git checkout (a downloaded archive): nothing to compare
        return []
    return [line[3:] for line in done.stdout.splitlines() if not line.startswith("??")]


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    edited = edited_stubs()
    if edited:
        pytest.skip(
            f"you have edited {', '.join(edited)}: the check that every untouched stub "
            "fails runs on the stubs as committed (CI runs it); check your own work "
            "with `make exercises`"
        )
    return run_exercises(tmp_path_factory.mktemp("stubs"))


def case_id(case: ET.Element) -> str:
    """module::test[parameters] of a test case."""
    return f"{case.get('classname')}::{case.get('name')}"


def outcome(case: ET.Element) -> str:
    """'passed', or the tag of the case's first result element (failure, error, skipped)."""
    return next(
        (child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed"
    )


@pytest.mark.slow
def test_every_solution_passes(solutions):
    code, cases, output = solutions
    modules = {case.get("classname").rsplit(".", 1)[-1] for case in cases}
    assert modules == {f"test_{name}" for name in EXERCISES}, (
        f"expected checks for every exercise {EXERCISES}, found {sorted(modules)}:\n{output}"
    )
    bad = [f"{case_id(case)}: {outcome(case)}" for case in cases if outcome(case) != "passed"]
    listing = "\n".join(bad)
    assert code == 0 and not bad, (
        f"with --solutions every check must pass:\n{listing}\n" + (output[-4000:])
    )


@pytest.mark.slow
def test_every_stub_fails_with_not_implemented(stubs, solutions):
    code, cases, output = stubs
    assert code == 1, f"pytest on the stubs should exit 1 (tests failed), got {code}:\n{output}"
    assert sorted(map(case_id, cases)) == sorted(map(case_id, solutions[1])), (
        "the stubs and the solutions must collect the same checks"
    )
    bad = []
    for case in cases:
        results = [child for child in case if child.tag in ("failure", "error", "skipped")]
        message = results[0].get("message", "") if results else ""
        match = STUB.fullmatch(message)
        module = case.get("classname").rsplit(".", 1)[-1].removeprefix("test_")
        stub = ROOT / "exercises" / f"{module}.py"
        if not (
            len(results) == 1
            and results[0].tag == "failure"
            and match
            and match.group(2) == module
            and f"def {match.group(1).rsplit('.', 1)[-1]}(" in stub.read_text()
        ):
            bad.append(f"{case_id(case)}: {outcome(case)} {message[:200]}")
    assert not bad, (
        "on the untouched stubs every check must fail with the stub's own 'not implemented "
        "yet' (a check that passes on a stub checks nothing; another error means a check or "
        "a stub is broken).\n" + "\n".join(bad)
    )
    assert output.count("not implemented yet") >= len(cases), output[-4000:]
    others = {
        m
        for m in re.findall(r"^E +(\w+(?:Error|Exception))\b", output, re.MULTILINE)
        if m != "NotImplementedError"
    }
    assert not others, f"the stubs' run shows other errors {sorted(others)}:\n{output[-4000:]}"


# --------------------------------------------------------------------------- make exercises-train
SMALL = exercise_train.Settings(
    steps=30, n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_batches=2
)


def synthetic_tokens(count: int, vocab: int = 40, seed: int = 0) -> np.ndarray:
    """A token array with structure to learn: runs of rising ids, broken by end-of-text (0)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(1, vocab - 8, size=count // 8)
    runs = [np.append(np.arange(s, s + 7), 0) for s in starts]
    return np.concatenate(runs).astype(np.uint16)


def test_training_with_the_solutions_matches_tinylm():
    pieces = exercise_train.load_pieces(solutions=True)
    assert exercise_train.missing_pieces(pieces) == []
    result = exercise_train.compare(
        pieces, synthetic_tokens(4000), synthetic_tokens(800, seed=1), 40, SMALL
    )
    assert len(result.yours) == len(result.tinylms) == SMALL.steps
    assert result.yours[-1] < result.yours[0], "the model did not learn"
    # The solutions draw the same batches as tinylm's sampler, so only rounding separates them.
    assert abs(result.gap) < 1e-3 and result.matches, exercise_train.report(result)
    poems = exercise_train.write_poems(pieces, result.model, eot_id=0, count=3, max_tokens=10)
    assert len(poems) == 3 and all(0 not in ids and len(ids) <= 10 for ids in poems)


def test_training_names_every_piece_not_written(capsys):
    if edited_stubs():
        pytest.skip("the stubs are edited here; CI checks them as committed")
    assert exercise_train.main(["--steps", "1"]) == 1
    printed = capsys.readouterr().out
    named = re.findall(r"^  - write ([\w.]+) in (exercises/\w+\.py)$", printed, re.MULTILINE)
    files = {f"exercises/{name}.py" for name in exercise_train.PIECES}
    assert {path for _, path in named} == files, printed
    assert len(named) == 14, printed


def test_training_names_the_one_piece_missing():
    pieces = exercise_train.load_pieces(solutions=True)
    if edited_stubs():
        pytest.skip("the stubs are edited here; CI checks them as committed")
    pieces["adamw"] = exercise_train.load_pieces(solutions=False)["adamw"]
    assert exercise_train.missing_pieces(pieces) == ["write step in exercises/adamw.py"]
