"""The report's four charts as SVG, drawn with matplotlib in the reader's language.

Text in the charts is drawn as outlines with the Korean font NanumGothic
(Debian's fonts-nanum), so a chart looks the same in any browser or PDF viewer,
with or without Korean fonts of its own. Titles and captions stay in the HTML.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import matplotlib
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from pilot_core.demonstration import Phase
from reports.content import DayPoint, ReportContent
from reports.i18n import Words

KOREAN_FONT = "NanumGothic"
KOREAN_FONT_FILES = ("NanumGothic.ttf", "NanumGothicBold.ttf")
COLOURS = {Phase.BASELINE: "#1f5fa8", Phase.PILOT: "#e07b00"}
CAUSE_LABEL_CHARS = 40


class FontMissing(RuntimeError):
    """The Korean font is not installed, so Korean text would be drawn as empty boxes."""


@dataclass(frozen=True, slots=True)
class Chart:
    key: str  # also the HTML id: chart-<key>
    title: str
    caption: str
    svg: str
    width_px: int
    height_px: int


@functools.cache
def korean_font_files() -> dict[str, Path]:
    """NanumGothic's files as installed, by file name (the console serves them to browsers); a clear error if
    they are missing."""
    found = {Path(f).name: Path(f) for f in font_manager.findSystemFonts() if Path(f).name in KOREAN_FONT_FILES}
    if not found:
        raise FontMissing(
            f"the Korean font {KOREAN_FONT} is not installed, so the report cannot be drawn: install the"
            " Debian package fonts-nanum (scripts/setup.sh does)"
        )
    return found


@functools.cache
def use_korean_font() -> None:
    """Register NanumGothic with matplotlib once, and draw every chart with it; a clear error if it is missing."""
    for path in korean_font_files().values():
        font_manager.fontManager.addfont(str(path))
    # Set once for the process: charts are drawn from several request threads, and rc_context is not thread-safe.
    matplotlib.rcParams.update(
        {
            "font.family": "sans-serif",
            "font.sans-serif": [KOREAN_FONT, "DejaVu Sans"],
            "font.size": 9,
            "svg.fonttype": "path",
            "svg.hashsalt": "pilot-telemetry report",  # the same data gives the same SVG
            "text.parse_math": False,  # a reason with a $ in it is text, not TeX
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def charts(content: ReportContent, words: Words) -> list[Chart]:
    use_korean_font()
    drawn: list[tuple[str, int, int, Callable[[Axes, ReportContent, Words], bool]]] = [
        ("cycle_times", 640, 320, _cycle_times),
        ("daily_oee", 640, 320, _daily_oee),
        ("downtime", 640, 400, _downtime),
        ("energy", 640, 320, _energy),
    ]
    result = []
    for key, width, height, draw in drawn:
        figure = Figure(figsize=(width / 96, height / 96), dpi=96, layout="constrained")
        axes = figure.add_subplot()
        if not draw(axes, content, words):
            _no_data(axes, words)
        title, caption = words[f"chart_{key}"], words[f"chart_{key}_caption"]
        result.append(Chart(key, title, caption, _svg(figure, key, title, width, height), width, height))
    return result


# An id in matplotlib's SVG, and a reference to one (``<use xlink:href="#…">``, ``clip-path="url(#…)"``).
_SVG_ID = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def _svg(figure: Figure, key: str, title: str, width: int, height: int) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    text = text[text.index("<svg") :]  # inline in HTML: no XML declaration or doctype
    # Every figure numbers its ids alike (figure_1, patch_1, its glyphs): inline in one page they must differ.
    text = _SVG_ID.sub(lambda match: f"{match[1]}{key}-{match[2]}", text)
    return re.sub(
        r'<svg([^>]*?) width="[^"]*" height="[^"]*"',
        f'<svg\\1 width="{width}" height="{height}" role="img" aria-label="{escape(title)}"',
        text,
        count=1,
    )


def _no_data(axes: Axes, words: Words) -> None:
    axes.clear()
    axes.set_axis_off()
    axes.text(0.5, 0.5, words["no_data"], transform=axes.transAxes, ha="center", va="center", fontsize=14)


def _legend(axes: Axes) -> None:
    """Below the plot, where it hides no bar or point."""
    handles, labels = axes.get_legend_handles_labels()
    axes.figure.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)


def _cycle_times(axes: Axes, content: ReportContent, words: Words) -> bool:
    bins = content.cycle_times
    if not bins:
        return False
    edges = [b.low_s for b in bins] + [bins[-1].high_s]
    for phase in Phase:
        shares = [b.share[phase] * 100 for b in bins]
        colour = COLOURS[phase]
        mean = content.phases[phase].cycle_time_mean_s
        label = words.phase(phase, short=True)
        if mean is not None:
            label += f" · {words.format('legend_mean', value=words.value(mean, 's'))}"
        axes.stairs(shares, edges, fill=True, alpha=0.3, color=colour)
        axes.stairs(shares, edges, color=colour, linewidth=2, label=label)
        if mean is not None:
            axes.axvline(mean, color=colour, linestyle="--", linewidth=1.5)
    axes.set_xlabel(words["axis_cycle_time"])
    axes.set_ylabel(words["axis_share_of_cycles"])
    axes.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    _legend(axes)
    return True


def _day_positions(days: list[DayPoint]) -> dict[DayPoint, float]:
    """Days side by side, with a gap where the baseline ends and the pilot begins (they may be weeks apart)."""
    positions: dict[DayPoint, float] = {}
    x = 0.0
    previous: Phase | None = None
    for day in days:
        if previous is not None and day.phase is not previous:
            x += 1
        positions[day] = x
        previous = day.phase
        x += 1
    return positions


def _by_day(
    axes: Axes, content: ReportContent, words: Words, value: Callable[[DayPoint], float | None], unit: str, bars: bool
) -> bool:
    days = [d for d in content.days if value(d) is not None]
    if not days:
        return False
    positions = _day_positions(days)
    for phase in Phase:
        chosen = [d for d in days if d.phase is phase]
        if not chosen:
            continue
        colour = COLOURS[phase]
        xs = [positions[d] for d in chosen]
        ys = [v * (100 if unit == "ratio" else 1) for d in chosen if (v := value(d)) is not None]
        if bars:
            axes.bar(xs, ys, color=colour, width=0.7, label=words.phase(phase, short=True))
        else:
            axes.plot(xs, ys, color=colour, marker="o", linewidth=2, label=words.phase(phase, short=True))
        whole = content.phases[phase]
        overall = whole.oee if unit == "ratio" else whole.energy_per_good_unit
        if overall is not None:
            name, shown = words.phase(phase, short=True), words.value(overall, unit)
            label = words.format("legend_phase_value", phase=name, value=shown)
            level = overall * (100 if unit == "ratio" else 1)
            axes.hlines(level, xs[0] - 0.4, xs[-1] + 0.4, colors=colour, linestyles="--", linewidth=1.5, label=label)
    every = max(1, len(days) // 14)
    ticks = days[::every]
    axes.set_xticks([positions[d] for d in ticks], [d.day.strftime("%m-%d") for d in ticks], rotation=45)
    axes.set_xlabel(words["axis_day"])
    _legend(axes)
    return True


def _daily_oee(axes: Axes, content: ReportContent, words: Words) -> bool:
    drawn = _by_day(axes, content, words, lambda d: d.oee, "ratio", bars=False)
    if drawn:
        axes.set_ylabel(words["axis_oee"])
        axes.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    return drawn


def _energy(axes: Axes, content: ReportContent, words: Words) -> bool:
    drawn = _by_day(axes, content, words, lambda d: d.energy_per_good_unit, "kWh/unit", bars=True)
    if drawn:
        axes.set_ylabel(words["axis_energy"])
    return drawn


def _downtime(axes: Axes, content: ReportContent, words: Words) -> bool:
    rows = content.downtime
    if not rows:
        return False
    height = 0.4
    for offset, phase in ((-height / 2, Phase.BASELINE), (height / 2, Phase.PILOT)):
        shares = [(row.share_of_pbt[phase] or 0.0) * 100 for row in rows]
        positions = [i + offset for i in range(len(rows))]
        axes.barh(positions, shares, height=height, color=COLOURS[phase], label=words.phase(phase, short=True))
    labels = [_shorten(words.cause(row)) for row in rows]
    axes.set_yticks(range(len(rows)), labels)
    axes.invert_yaxis()  # the largest cause on top
    axes.set_xlabel(words["axis_share_of_pbt"])
    axes.xaxis.set_major_formatter(PercentFormatter(decimals=1))
    _legend(axes)
    return True


def _shorten(label: str) -> str:
    return label if len(label) <= CAUSE_LABEL_CHARS else label[: CAUSE_LABEL_CHARS - 1] + "…"
