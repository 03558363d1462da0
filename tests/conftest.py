import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The tensors in these tests are small: one thread is as fast, and far faster when the two cores
    # are shared (two OpenMP threads on a busy machine spend most of their time waiting on each other).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The suite runs in two worker processes: each is the other's load, so the contention guard would wait
# before every measurement. It only flags here (its waiting is tested with a scripted process list).
os.environ.setdefault("DEPLOYKIT_WAIT_QUIET", "0")
