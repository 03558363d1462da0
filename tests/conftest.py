import os

import pytest
import torch

# With -n N (the README's `-n 2`), the tests that share an expensive module-scoped fixture run on one
# worker, which builds it once instead of once per worker: a whole `deploykit run` (test_pipeline), a
# real profile killed and resumed (test_profile), agents and a remote profile (test_remote_profile), the
# command server and its fixture files (test_cli_faults), exported models (test_verify), trained weights
# (test_train). Each group is one unit of work, sent first (the most tests first), so the long ones start
# at the beginning and the single tests balance the end. (`--dist loadgroup` with xdist_group marks
# would do this, but pytest-xdist 3.8 cannot rename node ids under pytest 9, so its groups are lost.)
# A value of None groups the whole file; a tuple, only the tests whose names start with one of those.
SHARED_FIXTURE_GROUPS = {
    "tests/test_pipeline.py": None,
    "tests/test_remote_profile.py": None,
    "tests/test_cli_faults.py": None,
    "tests/test_verify.py": None,
    "tests/test_train.py": None,
    "tests/test_profile.py": ("test_a_killed_profile_resumes", "test_real_onnxruntime_cpu_table"),
}


def shared_fixture_group(nodeid: str) -> str:
    """The unit of work ``nodeid`` belongs to: its group, or the test itself."""
    path, _, name = nodeid.partition("::")
    if path in SHARED_FIXTURE_GROUPS:
        prefixes = SHARED_FIXTURE_GROUPS[path]
        if prefixes is None or name.startswith(prefixes):
            return path if prefixes is None else f"{path}::{prefixes[0]}"
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "load":  # an explicit --dist other than the default: as asked
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_fixture_group(nodeid)

    return SharedFixtureScheduling(config, log)


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
