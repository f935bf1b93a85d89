"""Shared test settings and fixtures.

The suite runs on one torch thread (it must stay fast and deterministic on 2 cores).
"""

from collections.abc import Iterator

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Commands under test pin torch to their ``--threads``: every test leaves the thread count
    as it found it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
