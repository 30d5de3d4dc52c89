"""Shared test settings: small, deterministic, single-threaded where it matters."""

import os

import pytest
import torch

# Tests run on 2 shared cores; one intra-op thread keeps them predictable.
torch.set_num_threads(int(os.environ.get("CNNKIT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
