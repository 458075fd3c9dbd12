"""The suite's figures (kill points survived, inputs tried, frames lost), for docs/reliability.md.

Tests call `record(...)`; with VRE_RELIABILITY_FIGURES=FILE set, each call appends one JSON line to
FILE (otherwise nothing is kept). `python tests/reliability/figures.py FILE` sums them up:

    VRE_RELIABILITY_FIGURES=/tmp/fig.jsonl pytest tests/test_reliability_*.py tests/test_security.py
    python tests/reliability/figures.py /tmp/fig.jsonl
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict


def record(area: str, case: str, outcome: str, **numbers) -> None:
    """One case of the suite: e.g. record("run kill", "rgb shard half written", "resumed", lost=0)."""
    path = os.environ.get("VRE_RELIABILITY_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"area": area, "case": case, "outcome": outcome, **numbers}) + "\n")


def summarize(lines: list[dict]) -> str:
    """A markdown table: per area, cases, outcomes and the sums of the numeric fields."""
    by_area: dict[str, list[dict]] = defaultdict(list)
    for r in lines:
        by_area[r["area"]].append(r)
    rows = ["| area | cases | outcomes | totals |", "|---|---|---|---|"]
    for area, cases in by_area.items():
        outcomes: dict[str, int] = defaultdict(int)
        totals: dict[str, float] = defaultdict(float)
        for r in cases:
            outcomes[r["outcome"]] += 1
            for k, v in r.items():
                if k not in ("area", "case", "outcome") and isinstance(v, (int, float)):
                    totals[k] += v
        rows.append(f"| {area} | {len(cases)} | " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
                    + " | " + ", ".join(f"{k} {v:g}" for k, v in sorted(totals.items())) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarize([json.loads(line) for line in f if line.strip()]))
