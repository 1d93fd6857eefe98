"""The suite's pytest config (pyproject.toml) reports a failing test's own error.

Warnings are errors there. Replaying a failure, hypothesis builds the failing call's repr and
warns when it is large, as it is for a test taking a fixture that holds a log; as an error,
that warning replaced the test's AssertionError (seen in tests/projections/test_rebuild.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import clean_env

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

FAILING = """
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st


@pytest.fixture(scope="module")
def log():
    return ["a reading of a sensor, " * 8] * 200  # its repr is about 40 kB


@settings(database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10))
def test_fails(log, x):
    assert x < 3, "the real failure"
"""


def run_pytest(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """pytest with the project's config on a failing hypothesis test made in `tmp_path`."""
    (tmp_path / "test_failing.py").write_text(FAILING)
    argv = [sys.executable, "-m", "pytest", "-c", str(PYPROJECT), "--rootdir", str(tmp_path)]
    return subprocess.run(
        [*argv, "-p", "no:cacheprovider", "-q", *extra, "test_failing.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
        check=False,
    )


def test_a_failing_hypothesis_test_reports_its_own_assertion(tmp_path: Path) -> None:
    result = run_pytest(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "AssertionError: the real failure" in result.stdout
    assert "HypothesisWarning" not in result.stdout
    assert "1 failed" in result.stdout


def test_without_the_filter_the_warning_would_hide_it(tmp_path: Path) -> None:
    # -W comes after the config's filters and wins: the failure the filter prevents.
    result = run_pytest(tmp_path, "-W", "error::hypothesis.errors.HypothesisWarning")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "HypothesisWarning: Generating overly large repr" in result.stdout
    assert "AssertionError: the real failure" not in result.stdout
