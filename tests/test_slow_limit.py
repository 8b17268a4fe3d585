"""conftest.py's time limit for the fast tier, run by pytest on a temporary test file with a limit of 0.25 s."""

import re

SLOW_AND_FAST = """
import time

import pytest


@pytest.fixture(scope="module")
def slow_to_build():
    time.sleep(0.15)


def test_slow_unmarked():
    time.sleep(0.35)


@pytest.mark.slow
def test_slow_marked():
    time.sleep(0.35)


def test_fast():
    pass


def test_slow_setup_counts(slow_to_build):  # 0.15 s setup + 0.15 s call
    time.sleep(0.15)


def test_failures_stay_failures():
    assert 1 == 2
"""


def test_an_unmarked_test_over_the_limit_fails_with_what_to_do(pytester, pytestconfig):
    limit = type(pytestconfig.pluginmanager.get_plugin("slow_limit"))(0.25)
    pytester.makeini("[pytest]\nmarkers =\n    slow: over the limit\n")
    pytester.makepyfile(test_tiers=SLOW_AND_FAST)
    result = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:cacheprovider", plugins=[limit])
    result.assert_outcomes(passed=2, failed=3)
    failed = {r.nodeid.split("::")[1]: r for r in result.reprec.getreports("pytest_runtest_logreport") if r.failed}
    assert set(failed) == {"test_slow_unmarked", "test_slow_setup_counts", "test_failures_stay_failures"}
    message = str(failed["test_slow_unmarked"].longrepr)
    assert re.fullmatch(r"test_tiers.py::test_slow_unmarked took 0\.[3-5] s \(setup 0\.0 s \+ call 0\.[3-5] s\), over "
                        r"the 0.25 s limit for tests without the slow marker: mark it @pytest.mark.slow or make it "
                        r"faster", message), message
    assert re.search(r"\(setup 0\.[1-2] s \+ call 0\.[1-2] s\)", str(failed["test_slow_setup_counts"].longrepr))
    assert "assert 1 == 2" in str(failed["test_failures_stay_failures"].longrepr)
