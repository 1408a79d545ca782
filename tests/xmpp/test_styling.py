"""XEP-0393 message styling <-> the neutral rich-text tree (pure, table-driven, plus properties)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.xmpp._styling import normalise, rich_to_styling, styling_to_rich
from engine import CodeBlock, Emoji, LineBreak, Link, ListBlock, Mention, Paragraph, Quote, RichText
from engine._richtext import Text, paragraph, text


def rich(*blocks: Any) -> RichText:
    return RichText(blocks=tuple(blocks))


# body -> tree; each of these bodies also renders back to itself.
GOLDEN = [
    ("plain", rich(paragraph("plain"))),
    ("*b* _i_ ~s~ `c`", rich(paragraph(
        text("b", "bold"), " ", text("i", "italic"), " ", text("s", "strike"), " ",
        text("c", "code")))),
    ("*_both_*", rich(paragraph(text("both", "bold", "italic")))),
    ("*bold `code *not* end`", rich(paragraph(  # lazy: the first valid closer wins
        text("bold `code *not", "bold"), " end`"))),
    ("*bold `code` end*", rich(paragraph(
        text("bold ", "bold"), text("code", "bold", "code"), text(" end", "bold")))),
    ("line one\nline two", rich(paragraph("line one", LineBreak(), "line two"))),
    ("a\n\nb", rich(paragraph("a", LineBreak(), LineBreak(), "b"))),
    ("```\ncode *x*\n  indented\n```", rich(CodeBlock(code="code *x*\n  indented"))),
    ("```python\nprint(1)\n```\nafter", rich(CodeBlock(code="print(1)", language="python"),
                                            paragraph("after"))),
    ("> quoted *b*\n> more", rich(Quote(blocks=(paragraph(
        "quoted ", text("b", "bold"), LineBreak(), "more"),)))),
    ("> outer\n> > inner\n> outer again", rich(Quote(blocks=(
        paragraph("outer"), Quote(blocks=(paragraph("inner"),)), paragraph("outer again"))))),
    ("> ```\n> pre in quote\n> ```", rich(Quote(blocks=(CodeBlock(code="pre in quote"),)))),
    ("• one\n• two\n    • two.a\n• three", rich(ListBlock(items=(
        (paragraph("one"),),
        (paragraph("two"), ListBlock(items=((paragraph("two.a"),),))),
        (paragraph("three"),))))),
    ("1. first\n2. second\n    more of it", rich(ListBlock(ordered=True, items=(
        (paragraph("first"),), (paragraph("second", LineBreak(), "more of it"),))))),
    ("see https://x.test/a?b=1&c=2 now", rich(paragraph(
        "see ", Link(url="https://x.test/a?b=1&c=2"), " now"))),
    ("the page <https://x.test/p>", rich(paragraph(
        "the page ", Link(url="https://x.test/p"))) ),
    ("(https://x.test/wiki_(a)).", rich(paragraph(
        "(", Link(url="https://x.test/wiki_(a)"), ")."))),
    ("x<https://x.test>y", rich(paragraph("x", Link(url="https://x.test"), "y"))),
    ("*https://x.test/b*", rich(paragraph(text("https://x.test/b", "bold")))),  # no styled links
]


@pytest.mark.parametrize(("body", "tree"), GOLDEN)
def test_styling_parses(body: str, tree: RichText) -> None:
    assert styling_to_rich(body) == normalise(tree)


@pytest.mark.parametrize(("body", "tree"),
                         [(b, t) for b, t in GOLDEN if b not in (
                             "the page <https://x.test/p>",
                             "*bold `code` end*")])
def test_styling_renders(body: str, tree: RichText) -> None:
    assert rich_to_styling(tree) == body


@pytest.mark.parametrize("body", [
    "snake_case_name and 2*3*4",  # directives inside words open nothing
    "* not a span",               # opening directive followed by whitespace
    "*not a span *",              # closing directive preceded by whitespace
    "**",                         # spans are never empty
    "*across\nlines*",            # spans never cross lines
    "```\n*plain in pre*",        # unclosed pre runs to the end, unstyled
    "2. not a list",              # ordered lists start at 1
    "- not a list either",
    "mailto:x@y.z and ftp://x",
])
def test_text_that_is_not_styling_stays_text(body: str) -> None:
    tree = styling_to_rich(body)
    assert all(isinstance(b, Paragraph | CodeBlock) for b in tree.blocks)
    for block in tree.blocks:
        if isinstance(block, Paragraph):
            assert all(isinstance(i, LineBreak) or (isinstance(i, Text) and not i.styles)
                       for i in block.inlines)


@pytest.mark.parametrize(("tree", "body"), [
    (rich(paragraph(text(" padded ", "bold"), "x")), " *padded* x"),
    (rich(paragraph(Link(url="https://x.test", label="the site"))), "the site <https://x.test>"),
    (rich(paragraph(Link(url="https://x.test", label="https://x.test"))), "https://x.test"),
    (rich(paragraph(Link(url="https://x.test"), "abc")), "<https://x.test>abc"),
    (rich(paragraph(Link(url="https://x.test"), ". Next")), "https://x.test. Next"),
    (rich(paragraph(Link(url="https://x.test."))), "<https://x.test.>"),
    (rich(paragraph(Mention(address="john@acme.test", display="John"), " ",
                    Mention(address="mary@acme.test"))), "@John @mary@acme.test"),
    (rich(paragraph(Emoji(name="wave", unicode="👋"), Emoji(name="partyparrot"))),
     "👋:partyparrot:"),
    (rich(paragraph("a"), paragraph("b")), "a\nb"),
    (rich(CodeBlock(code="")), "```\n\n```"),
    (rich(Quote(blocks=(paragraph("a", LineBreak(), LineBreak(), "b"),))), "> a\n>\n> b"),
    (rich(ListBlock(items=((CodeBlock(code="x"),),))), "• ```\n    x\n    ```"),
])
def test_tree_renders(tree: RichText, body: str) -> None:
    assert rich_to_styling(tree) == body


def test_mentions_can_render_through_a_hook() -> None:
    tree = rich(paragraph("hi ", Mention(address="john@acme.test")))
    assert rich_to_styling(tree, lambda m: m.address.replace("@", "\\40") + "@hub") == \
        "hi john\\40acme.test@hub"


def test_empty_body_is_an_empty_tree() -> None:
    assert styling_to_rich("") == RichText()
    assert rich_to_styling(RichText()) == ""


# -- property: canonical -> styling -> canonical is stable -----------------------

_words = st.text(alphabet="ab *_~`<>:/.\n>•1", min_size=1, max_size=8)
_styles = st.lists(st.sampled_from(["bold", "italic", "strike", "code"]), unique=True)
_urls = st.builds(lambda w: f"https://x.test/{w}", st.text(alphabet="ab*_.)(<>", max_size=4))
_inline = st.one_of(
    st.builds(lambda w, s: text(w, *s), _words, _styles),
    st.builds(lambda u, w: Link(url=u, label=w), _urls, st.sampled_from(["", "site", "a *b*"])),
    st.sampled_from([Mention(address="john@acme.test"), Mention(address="m@x.y", display="M"),
                     Emoji(name="wave", unicode="👋"), Emoji(name="parrot"), LineBreak()]),
)
_paragraph = st.builds(lambda xs: Paragraph(inlines=tuple(xs)), st.lists(_inline, max_size=6))
_leaf = st.one_of(_paragraph,
                  st.builds(lambda c, lang: CodeBlock(code=c, language=lang), _words,
                            st.sampled_from(["", "python", " go "])))


def _blocks(depth: int) -> st.SearchStrategy[Any]:
    if not depth:
        return _leaf
    inner = st.lists(_blocks(depth - 1), min_size=1, max_size=3).map(tuple)
    return st.one_of(
        _leaf,
        st.builds(lambda bs: Quote(blocks=bs), inner),
        st.builds(lambda ordered, items: ListBlock(ordered=ordered, items=tuple(items)),
                  st.booleans(), st.lists(inner, min_size=1, max_size=3)),
    )


@settings(max_examples=300)
@given(st.lists(_blocks(2), max_size=4))
def test_canonical_to_styling_to_canonical_is_stable(blocks: list[Any]) -> None:
    tree = normalise(RichText(blocks=tuple(blocks)))
    once = styling_to_rich(rich_to_styling(tree))
    twice = styling_to_rich(rich_to_styling(once))
    assert twice == once


@settings(max_examples=300)
@given(st.text(alphabet="ab *_~`<>:/.\n>•1 ", max_size=30))
def test_any_body_parses_to_a_fixed_point(body: str) -> None:
    once = styling_to_rich(body)
    assert styling_to_rich(rich_to_styling(once)) == once


_simple_words = st.text(alphabet="abc ", min_size=1, max_size=6).filter(str.strip)


@given(st.lists(st.builds(lambda w, s: text(w, *s), _simple_words, _styles), min_size=1,
                         max_size=5))
def test_styled_words_separated_by_spaces_survive_exactly(runs: list[Text]) -> None:
    spaced: list[Text | str] = []
    for run in runs:
        spaced.extend([run, " "])
    tree = normalise(rich(paragraph(*spaced)))
    assert styling_to_rich(rich_to_styling(tree)) == tree
