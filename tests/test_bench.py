"""The development benchmark suite (benchmarks/suite.py) runs end to end (one
cheap scenario), so it does not rot.  Its numbers are not checked here: speed
is measured by the benchmarks, not timed in tests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite.py"


def test_dev_suite_quick_latency_scenario_writes_json_markdown_and_targets(tmp_path):
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, str(SUITE), "--quick", "--only", "latency",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert {"raw C", "sync API", "async (asyncio)"} <= set(res["latency"])
    for variant in res["latency"].values():
        assert len(variant["samples"]) == res["rounds"]
        assert all(s > 0 for s in variant["samples"])
    names = [t["target"] for t in res["targets"]]
    assert "sync call cost vs the C loop" in names
    md = (out / "results.md").read_text()
    assert "Null call latency" in md and ("PASS" in md or "MISS" in md)
    assert "### Targets" in r.stdout
