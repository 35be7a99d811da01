"""Checks that say in words what is wrong: the first differing element, and a hint.

A bare ``assert torch.allclose(a, b)`` only says "False". These helpers name the element that
differs, its value and the expected one, and add the exercise's hint about the likely cause.
Every helper hides itself from the traceback, so pytest points at the line of the test.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def expect(condition: bool, message: str) -> None:
    """Fail with message (and nothing else) unless condition holds."""
    __tracebackhide__ = True
    if not condition:
        raise AssertionError(message)


def num(x: float) -> str:
    """A number for a message: 4 significant digits, inf and nan spelt out."""
    return f"{float(x):.4g}"


def at(index: tuple[int, ...]) -> str:
    """An index for a message, e.g. (0, 1, 3)."""
    return "(" + ", ".join(str(i) for i in index) + ")"


def check_tensor(
    actual: object, what: str, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype | None = None
) -> None:
    """Fail unless actual is a tensor of this shape (and dtype, if given)."""
    __tracebackhide__ = True
    expect(
        isinstance(actual, torch.Tensor),
        f"{what} should be a torch.Tensor, got {type(actual).__name__}",
    )
    expect(
        tuple(actual.shape) == tuple(shape),
        f"{what} should have shape {tuple(shape)}, got {tuple(actual.shape)}",
    )
    if dtype is not None:
        expect(actual.dtype == dtype, f"{what} should have dtype {dtype}, got {actual.dtype}")


def differences(
    actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4
) -> torch.Tensor:
    """Boolean tensor, True where actual and expected differ (equal infinities agree)."""
    return ~torch.isclose(
        actual.detach().double(), expected.detach().double(), rtol=rtol, atol=atol
    )


def close(
    actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4
) -> bool:
    """Same shape and every element close: a quiet test for a diagnosis."""
    return (
        isinstance(actual, torch.Tensor)
        and actual.shape == expected.shape
        and not bool(differences(actual, expected, atol, rtol).any())
    )


def first_difference(
    actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4
) -> tuple[int, ...] | None:
    """Index of the first element where actual and expected differ, or None if none does."""
    bad = differences(actual, expected, atol, rtol)
    if not bad.any():
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def check_close(
    actual: object,
    expected: torch.Tensor,
    what: str,
    hint: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    describe: Callable[[tuple[int, ...]], str] | None = None,
) -> None:
    """Fail, naming the first wrong element, unless actual matches expected.

    describe turns the index of the wrong element into words (e.g. "head 1, position 3");
    hint is added at the end: what the usual cause is and how to fix it.
    """
    __tracebackhide__ = True
    check_tensor(actual, what, expected.shape)
    index = first_difference(actual, expected, atol, rtol)
    if index is None:
        return
    n_bad = int(differences(actual, expected, atol, rtol).sum())
    where = describe(index) if describe else f"element {at(index)}"
    message = (
        f"{what}: {where} is {num(actual[index])}, expected {num(expected[index])} "
        f"({n_bad} of {expected.numel()} elements differ)"
    )
    raise AssertionError(message + (f". {hint}" if hint else ""))


def call(function: Callable, *args: object, hint: str, **kwargs: object) -> object:
    """function(*args, **kwargs), turning an exception (other than "not implemented") into a hint.

    NotImplementedError passes through unchanged: the untouched stubs must say so.
    """
    __tracebackhide__ = True
    try:
        return function(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:
        raise AssertionError(
            f"{function.__name__} raised {type(error).__name__}: {error}. {hint}"
        ) from error
