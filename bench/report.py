"""``bench/RESULTS.md``: every result file in ``bench/results/`` as one human summary."""

from __future__ import annotations

from typing import Any

from bench.harness import BENCH_DIR, Result, goal_lines, load_all, table

ORDER = (
    "api-hit",
    "api-miss",
    "api-memory",
    "pipeline-load",
    "pipeline-increment",
    "orchestration",
)

INTRO = """\
# Benchmark results

Written by `make bench` (`python -m bench`); the raw figures are in `bench/results/*.json`.
Every figure is the min / median / max over its repetitions; ours and its comparisons run
interleaved in the same invocation, and ratios are taken per repetition, so machine noise
cancels in them. Goals are judged on the median. See `bench/README.md` for how each benchmark
is built and how to rerun one; the findings at the end (`bench/FINDINGS.md`) say what the
profiles showed where a goal is missed.
"""


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    return [
        f"- date: {machine.get('date')}; commit {machine.get('commit')}",
        f"- machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB, {machine.get('os')}",
        f"- python {machine.get('python')}; {packages}",
        f"- load generator: {machine.get('wrk')}; API servers pinned to CPU 1, wrk to CPU 0",
    ]


def _sorted(results: list[Result]) -> list[Result]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(results, key=lambda r: rank.get(r.name, len(ORDER)))


def render() -> str:
    results = _sorted(load_all())
    newest = max(results, key=lambda r: r.started_at, default=None)
    machine = newest.machine if newest is not None else {}
    lines = [INTRO, "## Machine", "", *_machine_lines(machine), "", "## Goals", ""]
    for result in results:
        lines += goal_lines(result)
    for result in results:
        lines += ["", f"## {result.title}", ""]
        lines.append(
            f"Measured {result.started_at} in {result.seconds:.0f} s; parameters: "
            + ", ".join(f"{k}={v}" for k, v in result.params.items())
        )
        lines += ["", table(result), ""]
        lines += goal_lines(result)
        if result.notes:
            lines += ["", *[f"- {note}" for note in result.notes]]
    return "\n".join(lines).rstrip() + "\n"


def write() -> None:
    text = render()
    findings = BENCH_DIR / "FINDINGS.md"
    if findings.exists():  # hand-written: what the profiles showed where a goal was missed
        text += "\n" + findings.read_text(encoding="utf-8")
    (BENCH_DIR / "RESULTS.md").write_text(text, encoding="utf-8")
