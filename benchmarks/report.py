"""Benchmark results: rows of samples per subject, targets, and the table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from subjects import LOCAL, RAW, SUBJECTS, SWIFTBLOBS

HEADERS = ("workload", "measure", RAW, LOCAL, "zodb-swiftblobs", "ratio", "target", "met")


@dataclass
class Row:
    """One measure of one workload: samples per subject."""

    key: str
    measure: str
    unit: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    def add(self, subject: str, value: float) -> None:
        self.samples.setdefault(subject, []).append(value)

    def median(self, subject: str) -> float | None:
        values = self.samples.get(subject)
        return statistics.median(values) if values else None

    def worst(self, subject: str, higher_is_worse: bool = True) -> float | None:
        values = self.samples.get(subject)
        if not values:
            return None
        return max(values) if higher_is_worse else min(values)

    def cell(self, subject: str) -> str:
        values = self.samples.get(subject)
        if not values:
            return "-"
        text = format_value(statistics.median(values), self.unit)
        if len(values) > 1:
            text += f" ({format_value(min(values), '')}-{format_value(max(values), '')})"
        return text


@dataclass
class Ratio:
    """Median of *subject* in row *key* over the median of *reference* in row
    *reference_key*; met when at least *at_least* or at most *at_most*.
    *label* names the reference in the target (by default: *reference*, or
    "without eviction" for another row)."""

    key: str
    subject: str
    reference_key: str
    reference: str
    at_least: float | None = None
    at_most: float | None = None
    label: str | None = None

    def evaluate(self, rows: dict[str, Row]) -> tuple[str, str, bool | None]:
        value = rows[self.key].median(self.subject)
        base = rows[self.reference_key].median(self.reference)
        bound = f">= {self.at_least:g}" if self.at_least is not None else f"<= {self.at_most:g}"
        name = self.label or (self.reference if self.reference_key == self.key
                              else "without eviction")
        target = f"{bound} x {name}"
        if value is None or not base:
            return "-", target, None
        ratio = value / base
        met = ratio >= self.at_least if self.at_least is not None else ratio <= self.at_most
        return f"{ratio:.2f}", target, met


@dataclass
class Below:
    """Every sample of *subject* in row *key* below *limit* (in the row's unit),
    or at most *limit* when *inclusive*."""

    key: str
    subject: str
    limit: float
    inclusive: bool = False

    def evaluate(self, rows: dict[str, Row]) -> tuple[str, str, bool | None]:
        worst = rows[self.key].worst(self.subject)
        bound = "<=" if self.inclusive else "<"
        target = f"{bound} {format_value(self.limit, rows[self.key].unit)} (every run)"
        if worst is None:
            return "-", target, None
        met = worst <= self.limit if self.inclusive else worst < self.limit
        return f"max {format_value(worst, rows[self.key].unit)}", target, met


@dataclass
class Flat:
    """Row *key*'s median grows by less than *slack* over row *first_key*'s
    (same subject): memory that does not grow with the object count."""

    first_key: str
    key: str
    subject: str
    slack: float

    def evaluate(self, rows: dict[str, Row]) -> tuple[str, str, bool | None]:
        first, last = rows[self.first_key].median(self.subject), rows[self.key].median(
            self.subject)
        unit = rows[self.key].unit
        target = f"< +{format_value(self.slack, unit)} over {rows[self.first_key].measure}"
        if first is None or last is None:
            return "-", target, None
        return f"+{format_value(last - first, unit)}", target, last - first < self.slack


def format_value(value: float, unit: str) -> str:
    if value >= 100:
        number = f"{value:,.0f}"
    elif value >= 10:
        number = f"{value:.1f}"
    elif 0 < value < 0.01:
        number = f"{value:.2g}"  # small, but not nothing
    else:
        number = f"{value:.2f}"
    return f"{number} {unit}".rstrip()


def table(rows: dict[str, Row], targets: dict[str, list]) -> list[list[str]]:
    """The rows of the results table (strings), in workload order."""
    lines = []
    for key, row in rows.items():
        evaluations = [target.evaluate(rows) for target in targets.get(key, [])] or \
            [("", "", None)]
        for index, (ratio, target, met) in enumerate(evaluations):
            cells = [row.key.split()[0], row.measure] + [row.cell(s) for s in SUBJECTS] \
                if index == 0 else ["", ""] + [""] * len(SUBJECTS)
            mark = "" if met is None else ("yes" if met else "NO")
            lines.append(cells + [ratio, target, mark])
    return lines


def markdown(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def rst(lines: list[list[str]]) -> str:
    """A reStructuredText grid table."""
    matrix = [list(HEADERS)] + lines
    widths = [max(len(line[i]) for line in matrix) for i in range(len(HEADERS))]

    def separator(char: str) -> str:
        return "+" + "+".join(char * (w + 2) for w in widths) + "+"

    def render(line: list[str]) -> str:
        return "|" + "|".join(f" {cell:<{w}} " for cell, w in zip(line, widths, strict=True)) + "|"

    out = [separator("-"), render(matrix[0]), separator("=")]
    for line in matrix[1:]:
        out += [render(line), separator("-")]
    return "\n".join(out)


def plain(lines: list[list[str]]) -> str:
    matrix = [list(HEADERS)] + lines
    widths = [max(len(line[i]) for line in matrix) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in matrix)


SUBJECT_NAMES = {RAW: "python-swiftclient alone", LOCAL: "ZODB BlobStorage over FileStorage",
                 SWIFTBLOBS: "SwiftBlobStorage over FileStorage"}
