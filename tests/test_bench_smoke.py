"""Every benchmark workload runs (one loop each) and agrees on what it measures.

This keeps the pyperf suite from rotting; it asserts nothing about speed.
"""

import pytest

from bench.workloads import GROUPS

CASES = [(group, variant) for group in GROUPS for variant in group.VARIANTS]


@pytest.mark.parametrize("group, variant", CASES, ids=[f"{g.GROUP}/{v}" for g, v in CASES])
def test_workload_runs_one_loop(group, variant):
    seconds = group.VARIANTS[variant](1)
    assert seconds > 0.0


@pytest.mark.parametrize("group", GROUPS, ids=[g.GROUP for g in GROUPS])
def test_targets_name_real_variants(group):
    assert group.SUBJECT in group.VARIANTS
    for other, ratio in group.TARGETS:
        assert other in group.VARIANTS and other != group.SUBJECT
        assert ratio > 0


def test_state_write_counts_meet_target():
    from bench.workloads import shell_statewrites

    counts = shell_statewrites.WRITE_COUNTS(300)
    assert counts["write-through"] == 300
    assert counts["write-behind"] <= 1
