"""Line charts laid out on the server, so the statistics page needs no charting library.

`line_chart` turns series of (time, value) points into plain coordinates; the template draws them as
SVG polylines. Every number here is in the SVG's own user units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

PALETTE = ("#1f5fbf", "#b42318", "#1e7f4f", "#8a5a00", "#6941c6", "#0e7490", "#c11574", "#475467")


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: str  # "x,y x,y …" for <polyline points>
    last_value: float
    markers: list[tuple[float, float]]  # a dot per hour, so a lone hour still shows


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]


def line_chart(
    series: dict[str, list[tuple[datetime, float]]],
    *,
    start: datetime,
    end: datetime,
    y_max: float = 1.0,
    width: int = 720,
    height: int = 260,
    y_format: str = "{:.0%}",
) -> LineChart:
    """Lay out `series` (name -> points) on a time axis [start, end] and a value axis [0, y_max]."""
    left, top, right, bottom = 48, 12, 44, 28  # the right margin holds half of the last time label
    plot_width, plot_height = width - left - right, height - top - bottom
    span = max((end - start).total_seconds(), 1.0)
    y_max = y_max if y_max > 0 else 1.0

    def x_of(moment: datetime) -> float:
        return left + plot_width * (moment - start).total_seconds() / span

    def y_of(value: float) -> float:
        return top + plot_height * (1.0 - min(value, y_max) / y_max)

    laid_out = []
    for index, (name, points) in enumerate(sorted(series.items())):
        coordinates = [(round(x_of(moment), 1), round(y_of(value), 1)) for moment, value in points]
        laid_out.append(
            Series(
                name=name,
                colour=PALETTE[index % len(PALETTE)],
                points=" ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates),
                last_value=points[-1][1] if points else 0.0,
                markers=coordinates,
            )
        )
    x_ticks = [
        Tick(
            position=x_of(start + (end - start) * step / 4),
            label=(start + (end - start) * step / 4).strftime("%m-%d %H:%M"),
        )
        for step in range(5)
    ]
    y_ticks = [
        Tick(position=y_of(y_max * step / 4), label=y_format.format(y_max * step / 4)) for step in range(5)
    ]
    return LineChart(width, height, left, top, plot_width, plot_height, laid_out, x_ticks, y_ticks)
