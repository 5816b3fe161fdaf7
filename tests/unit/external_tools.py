"""Programs of Debian packages the tests run (make deps installs them): in CI a missing one
fails the test, elsewhere it skips."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        message = f"needs {program} (Debian package {package}; make deps installs it)"
        if IN_CI:
            pytest.fail(f"CI=true and this test {message}", pytrace=False)
        pytest.skip(message)
    return path
