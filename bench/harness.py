"""Figures, goals and results: what every benchmark records, prints and writes.

A benchmark repeats each measurement several times and interleaves ours with its comparisons
(ours, floor, baseline, ours, floor, ...), so a ratio is taken per repetition, between runs that
saw the same machine noise, and reported as min/median/max like every other figure.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = BENCH_DIR / "data"
"""Generated data sets, reused across runs (git-ignored)."""
WORK_DIR = BENCH_DIR / ".work"
"""Scratch space of one run: data homes, DuckDB copies, logs (git-ignored)."""

Better = Literal["higher", "lower"]


@dataclass
class Figure:
    name: str
    unit: str
    values: list[float]
    better: Better = "higher"
    note: str = ""

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def low(self) -> float:
        return float(min(self.values))

    @property
    def high(self) -> float:
        return float(max(self.values))


@dataclass
class Goal:
    """A target on one figure's median: ``value <op> target``."""

    text: str
    figure: str
    op: Literal["<=", ">=", "<"]
    target: float
    value: float = float("nan")
    met: bool = False

    def judge(self, figures: dict[str, Figure]) -> None:
        figure = figures.get(self.figure)
        if figure is None or not figure.values:
            self.value, self.met = float("nan"), False
            return
        self.value = figure.median
        if self.op == "<=":
            self.met = self.value <= self.target
        elif self.op == ">=":
            self.met = self.value >= self.target
        else:
            self.met = self.value < self.target


@dataclass
class Result:
    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, unit: str, values: list[float], **kwargs: Any) -> Figure:
        figure = Figure(name, unit, [float(v) for v in values], **kwargs)
        self.figures.append(figure)
        return figure

    def figure(self, name: str) -> Figure:
        return {f.name: f for f in self.figures}[name]

    def judge(self) -> None:
        by_name = {f.name: f for f in self.figures}
        for goal in self.goals:
            goal.judge(by_name)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for raw, figure in zip(data["figures"], self.figures, strict=True):
            raw.update(min=figure.low, median=figure.median, max=figure.high)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        figures = [
            Figure(f["name"], f["unit"], f["values"], f.get("better", "higher"), f.get("note", ""))
            for f in data["figures"]
        ]
        goals = [Goal(**g) for g in data["goals"]]
        keys = ("params", "notes", "started_at", "seconds", "machine")
        rest = {k: data[k] for k in keys if k in data}
        return cls(data["name"], data["title"], figures=figures, goals=goals, **rest)


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-repetition ratios: the i-th of each list was measured side by side."""
    return [n / d if d else float("inf") for n, d in zip(numerators, denominators, strict=True)]


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fmt(value: float) -> str:
    """Three significant digits, no scientific notation for the sizes we print."""
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(result: Result) -> str:
    """The figures of one result as a Markdown table (also what the console shows)."""
    lines = [
        "| figure | unit | min | median | max | n |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for f in result.figures:
        name = f"{f.name} ({f.note})" if f.note else f.name
        lines.append(
            f"| {name} | {f.unit} | {fmt(f.low)} | {fmt(f.median)} | {fmt(f.high)} "
            f"| {len(f.values)} |"
        )
    return "\n".join(lines)


def goal_lines(result: Result) -> list[str]:
    units = {f.name: f.unit for f in result.figures}
    lines = []
    for g in result.goals:
        unit = units.get(g.figure, "")
        unit = "" if unit == "x" else f" {unit}"
        lines.append(
            f"- {'met' if g.met else 'NOT met'}: {g.text}: median {fmt(g.value)}{unit} "
            f"(goal {g.op} {fmt(g.target)}{unit})"
        )
    return lines


def save(result: Result) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{result.name}.json"
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def load_all() -> list[Result]:
    return [
        Result.from_json(json.loads(p.read_text(encoding="utf-8")))
        for p in sorted(RESULTS_DIR.glob("*.json"))
    ]
