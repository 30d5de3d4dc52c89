"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability_support import Uninterrupted


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uninterrupted]:
    runs = Uninterrupted(tmp_path_factory.mktemp("uninterrupted"))
    yield runs
    runs.close()
