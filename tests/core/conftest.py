"""Small synthetic data for concerto_core tests."""

import numpy as np
import pytest
from synthetic_data import simulate_groups


@pytest.fixture
def small_adata():
    return simulate_groups()


@pytest.fixture
def fast_config():
    from concerto_core import ConcertoConfig

    return ConcertoConfig(embedding_dim=32, batch_size=64, epochs=1, seed=3)


@pytest.fixture
def recorded_batches(monkeypatch):
    """Rows of every training mini-batch, in the order CellInputs cuts them."""
    from concerto_core.data import CellInputs

    seen = []
    original = CellInputs.batch

    def record(self, rows, modalities=None):
        seen.append(np.array(rows))
        return original(self, rows, modalities)

    monkeypatch.setattr(CellInputs, "batch", record)
    return seen
