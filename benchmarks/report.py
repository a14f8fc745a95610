"""Plain-text tables: medians with min-max, ratios against a baseline, targets met or missed;
the machine line that heads every report."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Sequence

import jax


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:.0f} MiB" if abs(b) >= 2**20 else f"{b / 2**10:.1f} KiB"


def median(xs: Sequence[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def spread(xs: Sequence[float] | None, fmt=fmt_time) -> str:
    """``median (min-max)``, or just the value for one run."""
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}-{fmt(max(xs))})"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def verdict(value: float | None, limit: float) -> str:
    """``pass`` or ``MISS`` for a ratio that must be at most ``limit``."""
    if value is None:
        return "-"
    return "pass" if value <= limit else "MISS"


@dataclasses.dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        """A markdown table, readable as plain text too."""
        widths = [len(h) for h in self.header]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

        out = [f"### {self.title}", "", line(self.header)]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out += [line(r) for r in self.rows]
        out += [""] + [f"{n}" for n in self.notes] if self.notes else []
        return "\n".join(out) + "\n"


def machine_line() -> str:
    """The machine, the versions, the time and the load: the first line of every report."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device = jax.devices()[0]
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {device.platform} ({device.device_kind}); "
        f"jax {jax.__version__}, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load:.2f} at start"
    )
