"""Emoji in canonical events: Unicode where one exists, else ``:shortcode:``.

Platforms name reactions differently (short names like ``thumbsup`` with
their own skin-tone syntax, or exactly one Unicode emoji); each adapter maps its own syntax
to these two functions instead of calling the emoji library itself.
"""

from __future__ import annotations

import emoji as emoji_library

__all__ = ["emoji_from_shortcode", "emoji_shortcode", "single_emoji"]


def emoji_from_shortcode(name: str) -> str:
    """``name`` (without colons) as Unicode when it is a known shortcode, else ``:name:``."""
    found = emoji_library.emojize(f":{name}:", language="alias")
    return f":{name}:" if found == f":{name}:" else found


def emoji_shortcode(value: str) -> str | None:
    """The shortcode (without colons) of a Unicode emoji, or ``None`` when it has none.

    ``:name:`` (a custom emoji kept as text) gives ``name``. A trailing
    variation selector is ignored when the plain form is known.
    """
    if value.startswith(":") and value.endswith(":") and len(value) > 2:
        return value[1:-1]
    for candidate in (value, value.replace("\ufe0f", "")):
        name = emoji_library.demojize(candidate, language="alias")
        if name.startswith(":") and name.endswith(":") and name.count(":") == 2:
            return name[1:-1]
    return None


def single_emoji(value: str) -> str | None:
    """``value`` as exactly one Unicode emoji (``:name:`` resolved), or ``None``."""
    if value.startswith(":") and value.endswith(":") and len(value) > 2:
        value = emoji_from_shortcode(value[1:-1])
    return value if emoji_library.purely_emoji(value) else None
