"""Make ``pytest benchmarks --benchmark-only`` collect the ``bench_*.py`` suites of this folder.

pytest's default file pattern is ``test_*.py``; the repository's ``testpaths`` is ``tests/``, so none of
these run in the default test run. A file named on the command line is collected by pytest itself, so it
is skipped here to avoid collecting it twice.
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
