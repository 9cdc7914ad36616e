"""The README's "shipped" table names exactly the config files udaseg ships, so it cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from udaseg import config as config_lib

ROOT = Path(__file__).resolve().parents[1]


def _shipped_table() -> dict[str, set[str]]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\| (benchmark|method|model|schedule|experiment) \| (.*) \|$", line)
        if match:
            # Names are the backticked words without '=' or '.' (those are options, e.g. method.mic=true).
            rows[match.group(1)] = {w for w in re.findall(r"`([^`]+)`", match.group(2)) if not re.search(r"[=.]", w)}
    return rows


@pytest.mark.parametrize("group", ["benchmark", "method", "model", "schedule", "experiment"])
def test_readme_lists_every_shipped_config(group):
    listed = _shipped_table()[group]
    shipped = set(config_lib.available(group))
    assert sorted(shipped - listed) == [], f"shipped {group} files missing from the README"
    assert sorted(listed - shipped) == [], f"README names {group} files that do not exist"
