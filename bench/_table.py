"""Plain-text tables for the human summary on stdout."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    widths = [len(header) for header in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells for {len(headers)} columns")
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths, strict=True)))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def rate(value: float | None) -> str:
    """Events per second, grouped by thousands."""
    return "-" if value is None else f"{value:,.0f}"


def micros(value: float) -> str:
    """A latency in microseconds, switching to ms above 10 ms."""
    return f"{value / 1000:,.1f} ms" if value >= 10_000 else f"{value:,.0f} us"


def times(value: float) -> str:
    """A ratio, as ``0.29x``."""
    return f"{value:.2f}x"


def size(value: float) -> str:
    """Bytes, in KB (1024) or MB."""
    if abs(value) >= 1024 * 1024:
        return f"{value / (1024 * 1024):,.1f} MB"
    return f"{value / 1024:,.2f} KB"
