"""`reaches` fails a property test whose generator does not reach the branch it exists for."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.propcoverage import branch, reaches


def test_a_generator_that_never_reaches_the_branch_fails() -> None:
    @reaches(big=0.1)
    @settings(max_examples=50, database=None)
    @given(st.integers(0, 10))
    def never(n: int) -> None:
        if n > 100:
            branch("big")

    with pytest.raises(AssertionError, match=r"rarely reaches \{'big': '0/"):
        never()


def test_a_generator_that_reaches_it_passes() -> None:
    @reaches(even=0.2)
    @settings(max_examples=50, database=None)
    @given(st.integers())
    def often(n: int) -> None:
        if n % 2 == 0:
            branch("even")

    often()


def test_reaches_goes_above_given() -> None:
    with pytest.raises(TypeError, match="above @given"):
        reaches(x=0.1)(lambda: None)
