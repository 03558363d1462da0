"""Makes this interpreter a board without the training stack: on ``PYTHONPATH`` (tests/test_agent_install.py),
every top-level module named in ``$DEPLOYKIT_TEST_ABSENT`` (comma-separated) fails to import as an
uninstalled package does, and each process appends its command line to ``$DEPLOYKIT_TEST_ABSENT_LOG``,
so the test can see that the agent and its measuring worker both ran here."""

import os
import sys
from importlib.abc import MetaPathFinder

ABSENT = frozenset(filter(None, os.environ.get("DEPLOYKIT_TEST_ABSENT", "").split(",")))


class _Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on this board)", name=name)
        return None


if ABSENT:
    sys.meta_path.insert(0, _Absent())
    if os.environ.get("DEPLOYKIT_TEST_ABSENT_LOG"):
        with open(os.environ["DEPLOYKIT_TEST_ABSENT_LOG"], "a") as log:
            log.write(" ".join(sys.orig_argv) + "\n")
