"""Pytest set-up of the exercises: `--solutions` checks the worked solutions instead of yours."""

import importlib
from types import ModuleType

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --solutions, to check exercises/solutions/ instead of the learner's files."""
    parser.addoption(
        "--solutions",
        action="store_true",
        help="check the worked solutions in exercises/solutions/ instead of the "
        "files you edit in exercises/",
    )


def pytest_configure(config: pytest.Config) -> None:
    """One CPU thread: the checks' tensors are tiny, and more threads only wait on each other."""
    torch.set_num_threads(1)


def pytest_report_header(config: pytest.Config) -> str:
    """Say at the top of the run which files are being checked."""
    if config.getoption("solutions"):
        return "exercises: checking the worked solutions in exercises/solutions/"
    return "exercises: checking your files in exercises/ (--solutions checks the solutions)"


@pytest.fixture
def exercise(request: pytest.FixtureRequest) -> ModuleType:
    """The module under test: exercises/<name>.py for tests/test_<name>.py (or the solution)."""
    name = request.path.stem.removeprefix("test_")
    package = "exercises.solutions" if request.config.getoption("solutions") else "exercises"
    return importlib.import_module(f"{package}.{name}")
