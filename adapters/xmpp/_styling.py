"""XEP-0393 message styling <-> the engine's neutral rich-text tree. Pure: no I/O.

XEP-0393 styling is plain body text, so every client shows something sensible
whether or not it renders the styles. The rules this module follows:

Blocks (a body is lines; a block is one or more whole lines):
    ``` lang      a preformatted block, up to a line holding exactly ``` or the
                  end of the enclosing block; the rest of the opening line is the
                  language hint; nothing inside is styled
    > text        a quote; its lines without the ``>`` (and one following space)
                  are parsed again as blocks, so quotes nest (``>> x``, ``> > x``)
    • item        an unordered list item; ``1. item``, ``2. item``… an ordered one
                  (numbered from 1, consecutively); lines indented by four spaces
                  continue the item and are parsed again as blocks
    anything else paragraph lines; a line break is a :class:`LineBreak`
Spans (never across lines):
    *strong*  _emphasis_  ~strike~  `pre`
    An opening directive is at the start of the line, after whitespace, or
    right after a different opening directive, and is followed by a
    non-whitespace character; the span closes at the first same directive
    that is preceded by non-whitespace (so spans are never empty). Text inside
    a pre span is not styled. There is no escape character (the XEP has none).
Beyond the XEP (our tree has these; XMPP has no markup for them):
    links     ``text <url>``, or the bare URL when it has no other label;
              bare ``http(s)://`` URLs and ``<url>`` in unstyled text are parsed
              back into links (inside a span a URL stays styled text)
    mentions  ``@name`` (or ``@user@domain``); parsed back as text
    emoji     the Unicode character (``:name:`` when unknown); parsed back as text

Normal form (what round trips are stable on; :func:`normalise`): as the Slack
converter's, plus a style never starts or ends on whitespace (XEP-0393 cannot
express that, so the whitespace at the edges of the stretch a style covers
loses that style).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Iterable

from engine import CodeBlock, Emoji, LineBreak, Link, ListBlock, Mention, Paragraph, Quote, RichText
from engine.richtext import STYLE_ORDER, Block, Inline, Style, Text, text

MentionText = Callable[[Mention], str]

DIRECTIVES: dict[str, Style] = {"*": "bold", "_": "italic", "~": "strike", "`": "code"}
_MARKS: dict[Style, str] = {style: mark for mark, style in DIRECTIVES.items()}
PRE_FENCE = "```"
BULLET = "• "
INDENT = "    "

_ORDERED_START = "1. "
# A URL Interlink recognises in text: bare (not glued to a word or path before
# it), or in angle brackets. Trailing punctuation of a bare URL stays text.
_URL = re.compile(r"<(?P<angle>https?://[^\s<>]+)>|(?<![\w/])(?P<bare>https?://[^\s<>]+)")
_TRAILING = ".,;:!?'\""
_ANGLE_SAFE = re.compile(r"https?://[^\s<>]+")


# --------------------------------------------------------------- normal form

def normalise_inlines(inlines: Iterable[Inline]) -> tuple[Inline, ...]:
    """Split ``"\\n"`` into :class:`LineBreak`, take each style off whitespace at the
    edges of the stretch it covers, merge same-style runs, drop empty runs."""
    cells: list[Inline | tuple[str, tuple[Style, ...]]] = []
    for node in inlines:
        if not isinstance(node, Text):
            cells.append(node)
            continue
        for i, line in enumerate(node.text.split("\n")):
            if i:
                cells.append(LineBreak())
            cells.extend((char, node.styles) for char in line)
    for style in STYLE_ORDER:
        start = 0
        while start < len(cells):
            if not _has(cells[start], style):
                start += 1
                continue
            end = start
            while end < len(cells) and _has(cells[end], style):
                end += 1
            _unstyle_edges(cells, start, end, style)
            start = end
    result: list[Inline] = []
    for cell in cells:
        if not isinstance(cell, tuple):
            result.append(cell)
            continue
        char, styles = cell
        last = result[-1] if result else None
        if isinstance(last, Text) and last.styles == styles:
            result[-1] = Text(text=last.text + char, styles=styles)
        else:
            result.append(Text(text=char, styles=styles))
    return tuple(result)


def _has(cell: Inline | tuple[str, tuple[Style, ...]], style: Style) -> bool:
    return isinstance(cell, tuple) and style in cell[1]


def _unstyle_edges(cells: list[Inline | tuple[str, tuple[Style, ...]]], start: int, end: int,
                   style: Style) -> None:
    """XEP-0393 spans cannot start or end with whitespace: move it outside the span."""
    def strip(index: int) -> bool:
        cell = cells[index]
        assert isinstance(cell, tuple)
        if not cell[0].isspace():
            return False
        cells[index] = (cell[0], tuple(s for s in cell[1] if s != style))
        return True

    index = start
    while index < end and strip(index):
        index += 1
    index = end - 1
    while index >= start and strip(index):
        index -= 1


def normalise(rich: RichText) -> RichText:
    """``rich`` in the normal form this module produces (see the module docstring)."""
    return RichText(blocks=tuple(_normalise_block(b) for b in rich.blocks))


def _normalise_block(block: Block) -> Block:
    if isinstance(block, Paragraph):
        return Paragraph(inlines=normalise_inlines(block.inlines))
    if isinstance(block, CodeBlock):
        return CodeBlock(code=block.code, language=" ".join(block.language.split()))
    if isinstance(block, Quote):
        return Quote(blocks=tuple(_normalise_block(b) for b in block.blocks))
    return ListBlock(ordered=block.ordered,
                     items=tuple(tuple(_normalise_block(b) for b in item)
                                 for item in block.items))


# ------------------------------------------------------------ styling -> tree

def styling_to_rich(body: str) -> RichText:
    """An XMPP message body (XEP-0393 styling) as a rich-text tree."""
    if not body:
        return RichText()
    return RichText(blocks=tuple(_blocks(body.split("\n"))))


def _blocks(lines: list[str]) -> list[Block]:
    blocks: list[Block] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(_paragraph(paragraph))
            paragraph.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith(PRE_FENCE):
            flush()
            end = index + 1
            while end < len(lines) and lines[end] != PRE_FENCE:
                end += 1
            blocks.append(CodeBlock(code="\n".join(lines[index + 1:end]),
                                    language=" ".join(line[len(PRE_FENCE):].split())))
            index = end + 1
        elif line.startswith(">"):
            flush()
            inner: list[str] = []
            while index < len(lines) and lines[index].startswith(">"):
                rest = lines[index][1:]
                inner.append(rest[1:] if rest.startswith(" ") else rest)
                index += 1
            blocks.append(Quote(blocks=tuple(_blocks(inner))))
        elif line.startswith((BULLET, _ORDERED_START)):
            flush()
            found, index = _list(lines, index)
            blocks.append(found)
        else:
            paragraph.append(line)
            index += 1
    flush()
    return blocks


def _list(lines: list[str], index: int) -> tuple[ListBlock, int]:
    ordered = lines[index].startswith(_ORDERED_START)
    items: list[tuple[Block, ...]] = []
    while index < len(lines):
        marker = f"{len(items) + 1}. " if ordered else BULLET
        if not lines[index].startswith(marker):
            break
        content = [lines[index][len(marker):]]
        index += 1
        while index < len(lines) and lines[index].startswith(INDENT):
            content.append(lines[index][len(INDENT):])
            index += 1
        items.append(tuple(_blocks(content)))
    return ListBlock(ordered=ordered, items=tuple(items)), index


def _paragraph(lines: list[str]) -> Paragraph:
    inlines: list[Inline] = []
    for i, line in enumerate(lines):
        if i:
            inlines.append(LineBreak())
        inlines.extend(_spans(line, 0, len(line), ()))
    return Paragraph(inlines=normalise_inlines(inlines))


def _can_open(line: str, index: int, start: int) -> bool:
    """XEP-0393 §6.2: may ``line[index]`` open a span in content that begins at ``start``?

    Yes at the start of the line, right after a *different* opening directive
    (the enclosing span's, at ``start - 1``), or after whitespace; and only
    when a non-whitespace character follows.
    """
    if index + 1 >= len(line) or line[index + 1].isspace():
        return False
    if index == start:
        return start == 0 or line[start - 1] != line[index]
    return line[index - 1].isspace()


Closers = dict[str, list[int]]


def _closers(line: str) -> Closers:
    """Positions of each directive that could close a span (preceded by non-whitespace)."""
    found: Closers = {mark: [] for mark in DIRECTIVES}
    for index in range(1, len(line)):
        if line[index] in DIRECTIVES and not line[index - 1].isspace():
            found[line[index]].append(index)
    return found


def _closing(line: str, index: int, stop: int, closers: Closers) -> int | None:
    """Where the span opened at ``index`` closes (before ``stop``): lazily, at the first
    same directive preceded by non-whitespace (XEP-0393 §6.2; nothing is skipped)."""
    candidates = closers[line[index]]
    found = bisect.bisect_left(candidates, index + 2)
    if found < len(candidates) and candidates[found] < stop:
        return candidates[found]
    return None


def _spans(line: str, start: int, stop: int, styles: tuple[Style, ...],
           closers: Closers | None = None) -> list[Inline]:
    """``line[start:stop]`` (a whole line, or a span's content) as inlines."""
    closers = _closers(line) if closers is None else closers
    nodes: list[Inline] = []
    plain_from = index = start
    while index < stop:
        mark = line[index]
        end = _closing(line, index, stop, closers) \
            if mark in DIRECTIVES and _can_open(line, index, start) else None
        if end is None:
            index += 1
            continue
        nodes.extend(_links(line[plain_from:index], styles))
        style = DIRECTIVES[mark]
        if style == "code":
            nodes.append(text(line[index + 1:end], *styles, "code"))
        else:
            nodes.extend(_spans(line, index + 1, end, (*styles, style), closers))
        index = plain_from = end + 1
    nodes.extend(_links(line[plain_from:stop], styles))
    return nodes


def _bare_end(value: str, start: int, end: int) -> int:
    """Where a bare URL matched at ``value[start:end]`` really ends: trailing punctuation
    and unbalanced closing parentheses are text."""
    opened = value.count("(", start, end)
    closed = value.count(")", start, end)
    while end > start:
        last = value[end - 1]
        if last == ")" and opened < closed:
            closed -= 1
        elif last not in _TRAILING:
            break
        end -= 1
    return end


def _links(segment: str, styles: tuple[Style, ...]) -> list[Inline]:
    """Links in unstyled text; inside a span a URL stays styled text (a link has no style)."""
    if styles:
        return [text(segment, *styles)]
    nodes: list[Inline] = []
    position = 0
    while (match := _URL.search(segment, position)) is not None:
        start = match.start()
        if match.group("angle"):
            url, end = match.group("angle"), match.end()
        else:
            end = _bare_end(segment, start, match.end())
            url = segment[start:end]
            if end - start <= len("https://"):
                nodes.append(text(segment[position:match.end()], *styles))
                position = match.end()
                continue
        nodes.append(text(segment[position:start], *styles))
        nodes.append(Link(url=url))
        position = end
    nodes.append(text(segment[position:], *styles))
    return nodes


# ------------------------------------------------------------ tree -> styling

def rich_to_styling(rich: RichText, mention_text: MentionText | None = None) -> str:
    """A rich-text tree as an XMPP message body with XEP-0393 styling.

    ``mention_text`` renders a mention (default: ``@display``, else ``@address``).
    """
    render = mention_text or _default_mention
    return "\n".join(_render_block(b, render) for b in normalise(rich).blocks)


def _default_mention(mention: Mention) -> str:
    return f"@{mention.display or mention.address}"


def _render_block(block: Block, mention: MentionText) -> str:
    if isinstance(block, Paragraph):
        return "\n".join(_render_line(line, mention) for line in _lines(block.inlines))
    if isinstance(block, CodeBlock):
        return "\n".join([PRE_FENCE + block.language, *block.code.split("\n"), PRE_FENCE])
    if isinstance(block, Quote):
        inner = "\n".join(_render_block(b, mention) for b in block.blocks).split("\n")
        return "\n".join(f"> {line}" if line else ">" for line in inner)
    rendered: list[str] = []
    for number, item in enumerate(block.items, start=1):
        marker = f"{number}. " if block.ordered else BULLET
        lines = "\n".join(_render_block(b, mention) for b in item).split("\n")
        rendered.append(marker + lines[0])
        rendered.extend(INDENT + line for line in lines[1:])
    return "\n".join(rendered)


def _lines(inlines: tuple[Inline, ...]) -> list[list[Inline]]:
    lines: list[list[Inline]] = [[]]
    for node in inlines:
        if isinstance(node, LineBreak):
            lines.append([])
        else:
            lines[-1].append(node)
    return lines


def _styled(inlines: list[Inline], priority: tuple[Style, ...]) -> list[str]:
    """Text runs with their directives, spans shared by neighbouring runs opened once.

    Adjacent runs are not separated by whitespace, so they cannot each have
    their own spans (a directive may only open after whitespace): a style two
    runs share stays open across both, the longer-lived style outermost; code
    is always innermost, as nothing inside it is styled; ties go by ``priority``.
    """
    pieces = [""] * len(inlines)
    stack: list[Style] = []

    def close_to(keep: int, i: int) -> None:
        while len(stack) > keep:
            pieces[i] += _MARKS[stack.pop()]

    for i, node in enumerate(inlines):
        styles = node.styles if isinstance(node, Text) else ()
        if i:
            close_to(next((n for n, s in enumerate(stack) if s not in styles), len(stack)), i - 1)
        if not isinstance(node, Text):
            continue
        opening = [s for s in node.styles if s not in stack]

        def lifetime(style: Style, start: int = i) -> tuple[int, int]:
            if style == "code":
                return (0, 0)
            end = start
            while end < len(inlines) and isinstance(run := inlines[end], Text) \
                    and style in run.styles:
                end += 1
            return (-(end - start), priority.index(style))

        opening.sort(key=lifetime)
        prefix = "".join(_MARKS[s] for s in opening)
        stack.extend(opening)
        pieces[i] = prefix + node.text
        if "code" in stack:
            close_to(stack.index("code"), i)
    if inlines:
        close_to(0, len(inlines) - 1)
    return pieces


#: nesting orders to try for styles opened together (the first is the default)
_NESTABLE: tuple[Style, ...] = ("bold", "italic", "strike")
_PRIORITIES: tuple[tuple[Style, ...], ...] = tuple(
    (*order, "code") for order in itertools.permutations(_NESTABLE))


def _render_line(inlines: list[Inline], mention: MentionText) -> str:
    """One line. Where styles open together, their nesting order can matter (the run's
    own text may hold directives): the first order whose text parses back is used."""
    first = _render_line_with(inlines, mention, _PRIORITIES[0])
    if not any(isinstance(n, Text) and len(n.styles) > 1 for n in inlines):
        return first
    expected = _expected(inlines, mention)
    if _parse_line(first) == expected:
        return first
    for priority in _PRIORITIES[1:]:
        line = _render_line_with(inlines, mention, priority)
        if line != first and _parse_line(line) == expected:
            return line
    return first


def _parse_line(line: str) -> tuple[Inline, ...]:
    return normalise_inlines(_spans(line, 0, len(line), ()))


def _expected(inlines: list[Inline], mention: MentionText) -> tuple[Inline, ...]:
    """What parsing a line should give back: mentions and emoji come back as text."""
    nodes: list[Inline] = []
    for node in inlines:
        if isinstance(node, Mention):
            nodes.append(text(mention(node)))
        elif isinstance(node, Emoji):
            nodes.append(text(node.unicode or f":{node.name}:"))
        elif isinstance(node, Link) and node.label and node.label != node.url:
            nodes.extend((text(f"{node.label} "), Link(url=node.url)))
        else:
            nodes.append(node)
    return normalise_inlines(nodes)


def _render_line_with(inlines: list[Inline], mention: MentionText,
                      priority: tuple[Style, ...]) -> str:
    """One line; links are decided right to left so each knows what follows it."""
    pieces = _styled(inlines, priority)
    for i, node in enumerate(inlines):
        if isinstance(node, Mention):
            pieces[i] = mention(node)
        elif isinstance(node, Emoji):
            pieces[i] = node.unicode or f":{node.name}:"
    for i in range(len(inlines) - 1, -1, -1):
        node = inlines[i]
        if isinstance(node, Link):
            before = pieces[i - 1][-1:] if i and not isinstance(inlines[i - 1], Link) else ""
            pieces[i] = _render_link(node, before, "".join(pieces[i + 1:]))
    return "".join(pieces)


def _render_link(link: Link, before: str, after: str) -> str:
    url = link.url
    label = link.label if link.label != url else ""
    if not _ANGLE_SAFE.fullmatch(url):
        return f"{label} {url}" if label else url  # not recognisable as a link: text it is
    if label:
        return f"{label} <{url}>"
    glued = bool(before) and (before.isalnum() or before in "_/")
    if not glued:
        match = _URL.match(url + after)
        if match and match.group("bare") and _bare_end(url + after, 0, match.end()) == len(url):
            return url
    return f"<{url}>"
