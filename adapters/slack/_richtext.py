"""Slack formatting <-> the engine's neutral rich-text tree. Pure: no I/O.

Slack carries formatting twice: ``rich_text`` blocks (what the composer
sends, preferred when present) and mrkdwn text (bots, fallbacks). This module
converts both ways:

- :func:`blocks_to_rich` / :func:`rich_to_blocks` — ``rich_text`` blocks;
- :func:`mrkdwn_to_rich` / :func:`rich_to_mrkdwn` — mrkdwn text.

Mentions cross through the directory: callers pass ``address_of(user_id)``
and ``user_id_of(address)`` lookups so that this module stays pure.

Normal form (what round trips are stable on): line breaks inside a
paragraph are :class:`LineBreak` nodes, never ``"\\n"`` inside a ``Text``;
adjacent runs with the same styles are merged; empty runs are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from engine import CodeBlock, Emoji, LineBreak, Link, ListBlock, Mention, Paragraph, Quote, RichText
from engine.richtext import STYLE_ORDER, Block, Inline, Style, Text, text

AddressOf = Callable[[str], str | None]
UserIdOf = Callable[[str], str | None]
Json = dict[str, Any]

_STYLE_KEYS: dict[str, Style] = {"bold": "bold", "italic": "italic", "strike": "strike",
                                 "code": "code"}


def _no_address(_: str) -> str | None:
    return None


# --------------------------------------------------------------- normal form

def normalise_inlines(inlines: Iterable[Inline]) -> tuple[Inline, ...]:
    """Split ``"\\n"`` into :class:`LineBreak`, merge same-style runs, drop empty runs."""
    result: list[Inline] = []
    for node in inlines:
        if isinstance(node, Text):
            for i, piece in enumerate(node.text.split("\n")):
                if i:
                    result.append(LineBreak())
                if not piece:
                    continue
                last = result[-1] if result else None
                if isinstance(last, Text) and last.styles == node.styles:
                    result[-1] = Text(text=last.text + piece, styles=node.styles)
                else:
                    result.append(Text(text=piece, styles=node.styles))
        else:
            result.append(node)
    return tuple(result)


def normalise(rich: RichText) -> RichText:
    return RichText(blocks=tuple(_normalise_block(b) for b in rich.blocks))


def _normalise_block(block: Block) -> Block:
    if isinstance(block, Paragraph):
        return Paragraph(inlines=normalise_inlines(block.inlines))
    if isinstance(block, Quote):
        return Quote(blocks=tuple(_normalise_block(b) for b in block.blocks))
    if isinstance(block, ListBlock):
        return ListBlock(ordered=block.ordered,
                         items=tuple(tuple(_normalise_block(b) for b in item)
                                     for item in block.items))
    return block


# ----------------------------------------------------------- blocks -> tree

def blocks_to_rich(blocks: Iterable[Json], address_of: AddressOf = _no_address) -> RichText:
    """The ``rich_text`` blocks of a Slack message as a rich-text tree.

    Other block types (sections, images, …) are ignored here; the caller
    falls back to the message text when no ``rich_text`` block is present.
    """
    result: list[Block] = []
    for block in blocks:
        if block.get("type") != "rich_text":
            continue
        lists = _ListBuilder(result, address_of)
        for element in block.get("elements", []):
            kind = element.get("type")
            if kind == "rich_text_list":
                lists.add(element)
                continue
            lists.close()
            if kind == "rich_text_section":
                result.append(Paragraph(inlines=_inlines(element, address_of)))
            elif kind == "rich_text_preformatted":
                code = "".join(_plain(e) for e in element.get("elements", []))
                result.append(CodeBlock(code=code))
            elif kind == "rich_text_quote":
                result.append(Quote(blocks=(Paragraph(inlines=_inlines(element, address_of)),)))
        lists.close()
    return RichText(blocks=tuple(result))


class _OpenList:
    """A list being rebuilt: Slack flattens nesting into consecutive lists with ``indent``."""

    def __init__(self, ordered: bool, indent: int) -> None:
        self.ordered = ordered
        self.indent = indent
        self.items: list[list[Block | _OpenList]] = []

    def freeze(self) -> ListBlock:
        return ListBlock(ordered=self.ordered, items=tuple(
            tuple(b.freeze() if isinstance(b, _OpenList) else b for b in item)
            for item in self.items))


class _ListBuilder:
    def __init__(self, result: list[Block], address_of: AddressOf) -> None:
        self._result = result
        self._address_of = address_of
        self._roots: list[_OpenList] = []
        self._stack: list[_OpenList] = []

    def add(self, element: Json) -> None:
        indent = int(element.get("indent", 0))
        ordered = element.get("style") == "ordered"
        stack = self._stack
        while stack and stack[-1].indent > indent:
            stack.pop()
        if stack and stack[-1].indent == indent and stack[-1].ordered != ordered:
            stack.pop()
        if not stack or stack[-1].indent < indent:
            opened = _OpenList(ordered, indent)
            if stack and stack[-1].items:
                stack[-1].items[-1].append(opened)
            else:
                self._roots.append(opened)
            stack.append(opened)
        current = stack[-1]
        for section in element.get("elements", []):
            current.items.append([Paragraph(inlines=_inlines(section, self._address_of))])

    def close(self) -> None:
        self._result.extend(root.freeze() for root in self._roots)
        self._roots.clear()
        self._stack.clear()


def _plain(element: Json) -> str:
    kind = element.get("type")
    if kind == "text":
        return str(element.get("text", ""))
    if kind == "link":
        return str(element.get("text") or element.get("url", ""))
    return ""


def _inlines(container: Json, address_of: AddressOf) -> tuple[Inline, ...]:
    nodes: list[Inline] = []
    for element in container.get("elements", []):
        kind = element.get("type")
        if kind == "text":
            style = element.get("style") or {}
            nodes.append(text(str(element.get("text", "")),
                              *(s for key, s in _STYLE_KEYS.items() if style.get(key))))
        elif kind == "link":
            nodes.append(Link(url=str(element.get("url", "")), label=str(element.get("text", ""))))
        elif kind == "user":
            user_id = str(element.get("user_id", ""))
            address = address_of(user_id)
            nodes.append(Mention(address=address or f"slack:{user_id}"))
        elif kind == "emoji":
            nodes.append(Emoji(name=str(element.get("name", "")),
                               unicode=_unicode(str(element.get("unicode", "")))))
        elif kind == "channel":
            nodes.append(text(f"#{element.get('channel_id', '')}"))
        elif kind == "broadcast":
            nodes.append(text(f"@{element.get('range', 'here')}"))
        elif kind == "usergroup":
            nodes.append(text(f"@{element.get('usergroup_id', '')}"))
        elif kind == "date":
            nodes.append(text(str(element.get("fallback") or element.get("timestamp", ""))))
    return normalise_inlines(nodes)


def _unicode(code_points: str) -> str:
    """Slack's ``unicode`` is hex code points joined by ``-`` (``1f44d``)."""
    if not code_points:
        return ""
    try:
        return "".join(chr(int(part, 16)) for part in code_points.split("-"))
    except ValueError:
        return ""


def _code_points(emoji: str) -> str:
    return "-".join(f"{ord(c):x}" for c in emoji)


# ----------------------------------------------------------- tree -> blocks

def rich_to_blocks(rich: RichText, user_id_of: UserIdOf = _no_address) -> list[Json]:
    """One ``rich_text`` block for chat.postMessage / chat.update (empty list for no body)."""
    elements: list[Json] = []
    for block in rich.blocks:
        elements.extend(_block_elements(block, user_id_of, indent=0))
    return [{"type": "rich_text", "elements": elements}] if elements else []


def _block_elements(block: Block, user_id_of: UserIdOf, indent: int) -> list[Json]:
    if isinstance(block, Paragraph):
        return [{"type": "rich_text_section", "elements": _elements(block.inlines, user_id_of)}]
    if isinstance(block, CodeBlock):
        return [{"type": "rich_text_preformatted",
                 "elements": [{"type": "text", "text": block.code}] if block.code else []}]
    if isinstance(block, Quote):
        inlines: list[Inline] = []
        for i, inner in enumerate(_paragraphs_of(block.blocks)):
            if i:
                inlines.append(LineBreak())
            inlines.extend(inner)
        return [{"type": "rich_text_quote", "elements": _elements(inlines, user_id_of)}]
    result: list[Json] = []
    current: list[Json] = []
    style = "ordered" if block.ordered else "bullet"

    def flush() -> None:
        if current:
            result.append({"type": "rich_text_list", "style": style, "indent": indent,
                           "elements": list(current)})
            current.clear()

    for item in block.items:
        head: list[Inline] = []
        nested: list[ListBlock] = []
        for part in item:
            if isinstance(part, ListBlock):
                nested.append(part)
            else:
                for i, para in enumerate(_paragraphs_of((part,))):
                    if head or i:
                        head.append(LineBreak())
                    head.extend(para)
        current.append({"type": "rich_text_section", "elements": _elements(head, user_id_of)})
        if nested:
            flush()
            for sub in nested:
                result.extend(_block_elements(sub, user_id_of, indent + 1))
    flush()
    return result


def _paragraphs_of(blocks: Iterable[Block]) -> list[tuple[Inline, ...]]:
    """Inline content of blocks that Slack can only show as lines of text."""
    lines: list[tuple[Inline, ...]] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            lines.append(block.inlines)
        elif isinstance(block, CodeBlock):
            lines.append((text(block.code, "code"),) if block.code else ())
        elif isinstance(block, Quote):
            lines.extend(_paragraphs_of(block.blocks))
        else:
            for item in block.items:
                for para in _paragraphs_of(item):
                    lines.append((text("• "), *para))
    return lines


def _elements(inlines: Iterable[Inline], user_id_of: UserIdOf) -> list[Json]:
    result: list[Json] = []
    for node in inlines:
        if isinstance(node, Text):
            element: Json = {"type": "text", "text": node.text}
            if node.styles:
                element["style"] = {s: True for s in node.styles}
            result.append(element)
        elif isinstance(node, LineBreak):
            result.append({"type": "text", "text": "\n"})
        elif isinstance(node, Link):
            link: Json = {"type": "link", "url": node.url}
            if node.label:
                link["text"] = node.label
            result.append(link)
        elif isinstance(node, Mention):
            user_id = _slack_user_id(node.address, user_id_of)
            if user_id:
                result.append({"type": "user", "user_id": user_id})
            else:
                result.append({"type": "text", "text": f"@{node.display or node.address}"})
        else:
            emoji: Json = {"type": "emoji", "name": node.name}
            if node.unicode:
                emoji["unicode"] = _code_points(node.unicode)
            result.append(emoji)
    return _merge_texts(result)


def _merge_texts(elements: list[Json]) -> list[Json]:
    merged: list[Json] = []
    for element in elements:
        last = merged[-1] if merged else None
        if (last is not None and element["type"] == "text" and last["type"] == "text"
                and last.get("style") == element.get("style")):
            merged[-1] = {**last, "text": last["text"] + element["text"]}
        else:
            merged.append(element)
    return merged


def _slack_user_id(address: str, user_id_of: UserIdOf) -> str | None:
    if address.startswith("slack:"):
        return address[len("slack:"):]
    return user_id_of(address)


# ------------------------------------------------------------ tree -> mrkdwn

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_MARKS: dict[Style, str] = {"bold": "*", "italic": "_", "strike": "~", "code": "`"}


def escape(value: str) -> str:
    """mrkdwn escapes exactly ``&``, ``<`` and ``>``."""
    return value.translate(_ESCAPES)


def rich_to_mrkdwn(rich: RichText, user_id_of: UserIdOf = _no_address) -> str:
    """mrkdwn text for the ``text`` field (the notification and fallback)."""
    return "\n".join(_block_mrkdwn(b, user_id_of, "") for b in rich.blocks)


def _block_mrkdwn(block: Block, user_id_of: UserIdOf, prefix: str) -> str:
    if isinstance(block, Paragraph):
        return prefix + _inline_mrkdwn(block.inlines, user_id_of).replace("\n", "\n" + prefix)
    if isinstance(block, CodeBlock):
        return prefix + "```" + escape(block.code) + "```"
    if isinstance(block, Quote):
        # A literal ">" at line start quotes (Slack itself sends it escaped: both parse).
        return "\n".join(_block_mrkdwn(b, user_id_of, prefix + "> ") for b in block.blocks)
    lines = []
    for number, item in enumerate(block.items, start=1):
        marker = f"{number}. " if block.ordered else "• "
        body = "\n".join(_block_mrkdwn(b, user_id_of, "") for b in item).split("\n")
        lines.append(prefix + marker + body[0])
        lines.extend(prefix + "    " + rest for rest in body[1:])
    return "\n".join(lines)


def _inline_mrkdwn(inlines: Iterable[Inline], user_id_of: UserIdOf) -> str:
    out = []
    for node in inlines:
        if isinstance(node, Text):
            value = escape(node.text)
            core = value.strip()
            if core and node.styles:
                # Markers must touch the text (`*bold*`, not `* bold*`): spaces go outside.
                lead, trail = value[:len(value) - len(value.lstrip())], value[len(value.rstrip()):]
                for style in STYLE_ORDER:
                    if style in node.styles:
                        core = _MARKS[style] + core + _MARKS[style]
                value = lead + core + trail
            out.append(value)
        elif isinstance(node, LineBreak):
            out.append("\n")
        elif isinstance(node, Link):
            out.append(f"<{node.url}|{escape(node.label)}>" if node.label else f"<{node.url}>")
        elif isinstance(node, Mention):
            user_id = _slack_user_id(node.address, user_id_of)
            out.append(f"<@{user_id}>" if user_id else escape(f"@{node.display or node.address}"))
        else:
            out.append(f":{node.name}:")
    return "".join(out)


# ------------------------------------------------------------ mrkdwn -> tree

_TOKEN = re.compile(
    r"<(?P<angle>[^>\n]+)>"
    r"|(?<![\w*_~`])(?P<mark>[*_~`])(?P<body>[^\n]+?)(?P=mark)(?![\w*_~`])"
    r"|:(?P<emoji>[a-z0-9_+'-]+):"
)
_MARK_STYLES: dict[str, Style] = {"*": "bold", "_": "italic", "~": "strike", "`": "code"}


def unescape(value: str) -> str:
    return value.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mrkdwn_to_rich(value: str, address_of: AddressOf = _no_address) -> RichText:
    """mrkdwn text (bots, or messages without blocks) as a rich-text tree."""
    blocks: list[Block] = []
    quote: list[str] = []
    parts = re.split(r"```(.*?)```", value, flags=re.S)
    for index, part in enumerate(parts):
        if index % 2:
            blocks.append(CodeBlock(code=unescape(part.strip("\n"))))
            continue
        paragraph: list[str] = []
        for line in part.split("\n"):
            marker = next((m for m in ("&gt; ", "> ", "&gt;", ">") if line.startswith(m)), None)
            if marker is not None and (line == marker.strip() or marker.endswith(" ")):
                if paragraph:
                    blocks.append(_mrkdwn_paragraph(paragraph, address_of))
                    paragraph = []
                quote.append(line[len(marker):])
                continue
            if quote:
                blocks.append(Quote(blocks=(_mrkdwn_paragraph(quote, address_of),)))
                quote = []
            paragraph.append(line)
        if quote:
            blocks.append(Quote(blocks=(_mrkdwn_paragraph(quote, address_of),)))
            quote = []
        if any(paragraph):
            blocks.append(_mrkdwn_paragraph(paragraph, address_of))
    return RichText(blocks=tuple(blocks))


def _mrkdwn_paragraph(lines: list[str], address_of: AddressOf) -> Paragraph:
    return Paragraph(inlines=_mrkdwn_inlines("\n".join(lines).strip("\n"), (), address_of))


def _mrkdwn_inlines(value: str, styles: tuple[Style, ...],
                    address_of: AddressOf) -> tuple[Inline, ...]:
    nodes: list[Inline] = []
    position = 0
    for match in _TOKEN.finditer(value):
        if match.start() > position:
            nodes.append(text(unescape(value[position:match.start()]), *styles))
        position = match.end()
        if match.group("angle"):
            nodes.append(_angle(match.group("angle"), address_of))
        elif match.group("mark"):
            style = _MARK_STYLES[match.group("mark")]
            body = match.group("body")
            if style == "code":
                nodes.append(text(unescape(body), *styles, "code"))
            else:
                nodes.extend(_mrkdwn_inlines(body, (*styles, style), address_of))
        else:
            nodes.append(Emoji(name=match.group("emoji")))
    if position < len(value):
        nodes.append(text(unescape(value[position:]), *styles))
    return normalise_inlines(nodes)


def _angle(content: str, address_of: AddressOf) -> Inline:
    target, _, label = content.partition("|")
    if target.startswith("@"):
        user_id = target[1:]
        return Mention(address=address_of(user_id) or f"slack:{user_id}",
                       display=unescape(label))
    if target.startswith("#"):
        return text(f"#{unescape(label) or target[1:]}")
    if target.startswith("!"):
        return text(f"@{unescape(label) or target[1:].split('^')[0]}")
    return Link(url=unescape(target), label=unescape(label))
