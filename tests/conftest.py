"""Fixtures shared by the whole test suite."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared corpora, ``<repo>/../shared/data``.

    The corpora live outside the repository (they must never be copied into it), so tests on
    real audio skip, instead of failing, on machines that do not have them.
    """
    root = REPO_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip("../shared/data not found: real-audio tests skipped")
    return root
