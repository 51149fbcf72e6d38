"""Small synthetic data for concerto_core tests."""

import pytest
from synthetic_data import simulate_groups


@pytest.fixture
def small_adata():
    return simulate_groups()


@pytest.fixture
def fast_config():
    from concerto_core import ConcertoConfig

    return ConcertoConfig(embedding_dim=32, batch_size=64, epochs=1, seed=3)
