"""The reliability suite (`python -m pytest tests/reliability`): hostile but fair use.

Every test here is tagged ``@pytest.mark.reliability("category")``. At the end of the
run a table prints, one row per category: trials (tests run), passed. A row below 100%
is a regression: each trial also checks that labels, rounds and vectors are intact.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

_RESULTS: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # category -> [trials, passed]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "reliability(category): a reliability-suite trial, counted in its category's row"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("reliability")
    if marker is None or not marker.args:
        return
    # A trial counts once: its call phase, or a setup that failed or skipped before it.
    if report.when == "call" or (report.when == "setup" and not report.passed):
        row = _RESULTS[str(marker.args[0])]
        row[0] += 1
        row[1] += int(report.passed)


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("reliability")
    width = max(len("category"), *(len(c) for c in _RESULTS))
    tr.write_line(f"{'category':<{width}}  trials  passed  rate")
    for category in sorted(_RESULTS):
        trials, passed = _RESULTS[category]
        tr.write_line(f"{category:<{width}}  {trials:>6}  {passed:>6}  {100.0 * passed / trials:5.1f}%")
