import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # Two workers share two cores under xdist: one thread each avoids oversubscription.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
