"""bench/report.py: the README's performance section is made from the report's figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import BEGIN, END, last_json, render_into, targets  # noqa: E402

REPORT = {
    "issue": 18,
    "started_at": "2026-12-03 08:00 UTC",
    "machine": {"cpus": 2, "memory_gib": 23.5, "python": "3.11.7", "kernel": "6.1", "commit": "abc1234"},
    "quick": False,
    "benchmarks": {
        "serving": {
            "ran_at": "2026-12-03 08:01 UTC",
            "command": "python bench/serving.py",
            "load_average_before": 0.5,
            "load_average_after": 1.5,
            "result": {
                "warm": {
                    "in_process_predict": {"p50_ms": 2.6, "p99_ms": 3.0},
                    "bare_uvicorn": {"p50_ms": 2.6, "p99_ms": 3.1},
                    "coldbrew": {"p50_ms": 2.85, "p99_ms": 3.4},
                    "coldbrew_overhead_p50_ms": 0.25,
                },
                "concurrent_8": {
                    "bare_uvicorn": {"throughput_rps": 400.0, "p50_ms": 20.0, "p99_ms": 30.0,
                                     "server_cpu_ms_per_request": 2.5},
                    "coldbrew": {"throughput_rps": 560.0, "p50_ms": 14.0, "p99_ms": 35.0,
                                 "server_cpu_ms_per_request": 3.2, "server_cpu_over_predict_ms": 0.9},
                    "predict_cpu_ms": 2.3,
                    "throughput_over_bare_uvicorn": 1.4,
                },
            },
        },
    },
}  # fmt: skip


def test_targets_are_read_off_the_figures() -> None:
    rows = {row["figure"]: row for row in targets(REPORT["benchmarks"])}
    assert rows["warm p50 over in-process predict (ms)"]["met"] is True
    assert rows["throughput at 8 clients / bare uvicorn with the model in-process"] == {
        "point": "5",
        "figure": "throughput at 8 clients / bare uvicorn with the model in-process",
        "value": 1.4,
        "target": ">= 1.8",
        "met": False,
    }
    # A benchmark that did not run is "not measured", neither met nor failed.
    assert rows["cold start p50, random forest (ms)"]["met"] is None


def test_render_replaces_only_the_section_between_the_markers(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(REPORT))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    render_into(report, readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + BEGIN)
    assert text.endswith(END + "\n\nafter\n")
    assert "old figures" not in text
    row = "| 5 | throughput at 8 clients / bare uvicorn with the model in-process | 1.4 | >= 1.8 | **no** |"
    assert row in text
    assert "commit `abc1234`" in text
    render_into(report, readme)  # again: the same text, not a second section
    assert readme.read_text() == text


def test_render_refuses_a_readme_without_markers(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(REPORT))
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit):
        render_into(report, readme)
    assert readme.read_text() == "# no markers\n"


def test_last_json_takes_the_document_after_the_progress_lines() -> None:
    out = 'progress {"not": "this"}\n{\n  "a": 1\n}\n'
    assert last_json(out) == {"a": 1}
    with pytest.raises(ValueError):
        last_json("no json here\n")
