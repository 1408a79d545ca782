"""The neutral rich-text tree every adapter converts to and from.

Blocks hold inlines; inlines carry styles. The tree is deliberately small:
what the chat platforms we federate and HTML can all express, nothing more.

    RichText(blocks=[Paragraph | CodeBlock | Quote | ListBlock])
    Paragraph(inlines=[Text | Link | Mention | Emoji | LineBreak])
"""

from __future__ import annotations

from typing import Literal

import msgspec

Style = Literal["bold", "italic", "strike", "code"]
STYLE_ORDER: tuple[Style, ...] = ("bold", "italic", "strike", "code")


class _Node(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """A node of the tree. ``gc=False`` (inherited): frozen nodes hold strings and
    tuples of younger nodes, so they cannot form a cycle and need no tracking."""


class Text(_Node, tag="text", frozen=True, kw_only=True):
    """A run of text; ``styles`` is kept sorted in :data:`STYLE_ORDER` by :func:`text`."""

    text: str
    styles: tuple[Style, ...] = ()


class Link(_Node, tag="link", frozen=True, kw_only=True):
    url: str
    label: str = ""  # empty: show the URL itself


class Mention(_Node, tag="mention", frozen=True, kw_only=True):
    """A mention of a federated identity; ``address`` is ``user@domain``."""

    address: str
    display: str = ""


class Emoji(_Node, tag="emoji", frozen=True, kw_only=True):
    """An emoji by short name (``thumbsup``) with its Unicode form when known."""

    name: str
    unicode: str = ""


class LineBreak(_Node, tag="br", frozen=True, kw_only=True):
    pass


Inline = Text | Link | Mention | Emoji | LineBreak


class Paragraph(_Node, tag="paragraph", frozen=True, kw_only=True):
    inlines: tuple[Inline, ...] = ()


class CodeBlock(_Node, tag="code_block", frozen=True, kw_only=True):
    code: str
    language: str = ""


class Quote(_Node, tag="quote", frozen=True, kw_only=True):
    blocks: tuple[Block, ...] = ()


class ListBlock(_Node, tag="list", frozen=True, kw_only=True):
    """A list; each item is a sequence of blocks."""

    items: tuple[tuple[Block, ...], ...] = ()
    ordered: bool = False


Block = Paragraph | CodeBlock | Quote | ListBlock


class RichText(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    blocks: tuple[Block, ...] = ()


def text(value: str, *styles: Style) -> Text:
    """A :class:`Text` run with its styles in canonical order (so equal trees compare equal)."""
    return Text(text=value, styles=tuple(s for s in STYLE_ORDER if s in styles))


def paragraph(*inlines: Inline | str) -> Paragraph:
    return Paragraph(inlines=tuple(text(i) if isinstance(i, str) else i for i in inlines))


def plain(value: str) -> RichText:
    """Rich text holding ``value`` as unstyled paragraphs (one per line group)."""
    if not value:
        return RichText()
    return RichText(blocks=(paragraph(value),))


def to_plain_text(rich: RichText) -> str:
    """A readable plain-text rendering, used as every message's fallback."""
    return "\n".join(_block_text(b, "") for b in rich.blocks)


def _inline_text(node: Inline) -> str:
    if isinstance(node, Text):
        return node.text
    if isinstance(node, Link):
        return f"{node.label} ({node.url})" if node.label and node.label != node.url else node.url
    if isinstance(node, Mention):
        return f"@{node.display or node.address}"
    if isinstance(node, Emoji):
        return node.unicode or f":{node.name}:"
    return "\n"


def _block_text(block: Block, indent: str) -> str:
    if isinstance(block, Paragraph):
        return indent + "".join(_inline_text(i) for i in block.inlines)
    if isinstance(block, CodeBlock):
        return "\n".join(indent + line for line in block.code.split("\n"))
    if isinstance(block, Quote):
        return "\n".join(_block_text(b, indent + "> ") for b in block.blocks)
    lines = []
    for number, item in enumerate(block.items, start=1):
        marker = f"{number}. " if block.ordered else "- "
        rendered = "\n".join(_block_text(b, "") for b in item).split("\n")
        lines.append(indent + marker + rendered[0])
        lines.extend(indent + " " * len(marker) + rest for rest in rendered[1:])
    return "\n".join(lines)
