"""Moved to :class:`engine.Bounded` (kept until every adapter imports it from there)."""

from engine import Bounded as Bounded
