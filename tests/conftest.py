"""Suite-wide rules: with CI=true nothing may be skipped; slow runs are opt-in."""

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
LONG = os.environ.get("TUNRING_LONG") == "1"


def pytest_collection_modifyitems(config, items):
    # Long runs are deselected, not skipped, unless asked for.
    if LONG:
        return
    keep = [item for item in items if "slow" not in item.keywords]
    dropped = [item for item in items if "slow" in item.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _fail_if_skipped(report) -> None:
    if IN_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which is a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_skipped(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A skip raised while a module is imported (pytest.importorskip or pytest.skip(...,
    # allow_module_level=True) at module level) skips every test in it before any test report
    # exists: it must fail under CI=true too.
    outcome = yield
    _fail_if_skipped(outcome.get_result())
