"""Suite-wide rules. Under CI=true a skipped test or module fails instead: CI must not pass by
skipping (a tool or package that is missing there is a broken set-up, not a reason to skip)."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

TestWrapper = Generator[None, pytest.TestReport, pytest.TestReport]  # receives the report, returns it
CollectWrapper = Generator[None, pytest.CollectReport, pytest.CollectReport]


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    if under_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may be skipped: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> TestWrapper:
    report = yield
    _fail_if_skipped(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> CollectWrapper:
    report = yield
    _fail_if_skipped(report)
    return report
