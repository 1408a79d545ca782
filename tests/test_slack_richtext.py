"""Slack rich_text blocks and mrkdwn <-> the neutral rich-text tree (pure, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.slack._richtext import (
    blocks_to_rich,
    mrkdwn_to_rich,
    normalise,
    rich_to_blocks,
    rich_to_mrkdwn,
)
from engine import CodeBlock, Emoji, LineBreak, Link, ListBlock, Mention, Paragraph, Quote, RichText
from engine._richtext import paragraph, text

USERS = {"U0JOHN": "john@acme.test", "U0MARY": "mary@acme.test"}
IDS = {address: user_id for user_id, address in USERS.items()}


def address_of(user_id: str) -> str | None:
    return USERS.get(user_id)


def user_id_of(address: str) -> str | None:
    return IDS.get(address)


def section(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "rich_text_section", "elements": list(elements)}


def t(value: str, **style: bool) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "text", "text": value}
    if style:
        element["style"] = style
    return element


# What Slack's composer sends for: "Hi *bold* _it_ ~gone~ `x` <link> @john :wave:"
COMPOSER_BLOCKS = [{
    "type": "rich_text", "block_id": "Vrzsu",
    "elements": [
        section(t("Hi "), t("bold", bold=True), t(" "), t("it", italic=True), t(" "),
                t("gone", strike=True), t(" "), t("x", code=True), t(" "),
                {"type": "link", "url": "https://example.com", "text": "site"}, t(" "),
                {"type": "user", "user_id": "U0JOHN"}, t(" "),
                {"type": "emoji", "name": "wave", "unicode": "1f44b"}, t("\nsecond line")),
        {"type": "rich_text_preformatted", "elements": [t("print(1)\nprint(2)")], "border": 0},
        {"type": "rich_text_quote", "elements": [t("quoted")]},
        {"type": "rich_text_list", "style": "bullet", "indent": 0, "border": 0,
         "elements": [section(t("one")), section(t("two"))]},
        {"type": "rich_text_list", "style": "ordered", "indent": 1, "border": 0,
         "elements": [section(t("two.a"))]},
        {"type": "rich_text_list", "style": "bullet", "indent": 0, "border": 0,
         "elements": [section(t("three"))]},
    ],
}]

COMPOSER_TREE = RichText(blocks=(
    paragraph("Hi ", text("bold", "bold"), " ", text("it", "italic"), " ",
              text("gone", "strike"), " ", text("x", "code"), " ",
              Link(url="https://example.com", label="site"), " ",
              Mention(address="john@acme.test"), " ", Emoji(name="wave", unicode="👋"),
              LineBreak(), "second line"),
    CodeBlock(code="print(1)\nprint(2)"),
    Quote(blocks=(paragraph("quoted"),)),
    ListBlock(items=(
        (paragraph("one"),),
        (paragraph("two"), ListBlock(ordered=True, items=((paragraph("two.a"),),))),
        (paragraph("three"),),
    )),
))


def test_composer_blocks_become_the_tree() -> None:
    assert blocks_to_rich(COMPOSER_BLOCKS, address_of) == normalise(COMPOSER_TREE)


def test_the_tree_becomes_composer_blocks_and_back() -> None:
    blocks = rich_to_blocks(COMPOSER_TREE, user_id_of)
    assert blocks_to_rich(blocks, address_of) == normalise(COMPOSER_TREE)
    elements = blocks[0]["elements"]
    assert [e["type"] for e in elements] == [
        "rich_text_section", "rich_text_preformatted", "rich_text_quote",
        "rich_text_list", "rich_text_list", "rich_text_list"]
    assert [e.get("indent") for e in elements[3:]] == [0, 1, 0]
    assert {"type": "user", "user_id": "U0JOHN"} in elements[0]["elements"]
    assert {"type": "emoji", "name": "wave", "unicode": "1f44b"} in elements[0]["elements"]


def test_unknown_slack_users_and_addresses_survive_as_ids_or_text() -> None:
    tree = blocks_to_rich([{"type": "rich_text", "elements": [
        section({"type": "user", "user_id": "U0NOBODY"})]}], address_of)
    assert tree == RichText(blocks=(paragraph(Mention(address="slack:U0NOBODY")),))
    assert rich_to_blocks(tree)[0]["elements"][0]["elements"] == [
        {"type": "user", "user_id": "U0NOBODY"}]
    remote = RichText(blocks=(paragraph(Mention(address="peter@widget.test", display="Peter")),))
    assert rich_to_blocks(remote, user_id_of)[0]["elements"][0]["elements"] == [
        {"type": "text", "text": "@Peter"}]


@pytest.mark.parametrize(("mrkdwn", "expected"), [
    ("plain", RichText(blocks=(paragraph("plain"),))),
    ("*b* _i_ ~s~ `c`", RichText(blocks=(paragraph(
        text("b", "bold"), " ", text("i", "italic"), " ", text("s", "strike"), " ",
        text("c", "code")),))),
    ("*_both_*", RichText(blocks=(paragraph(text("both", "bold", "italic")),))),
    ("see <https://x.test/a?b=1&amp;c=2|the page> now", RichText(blocks=(paragraph(
        "see ", Link(url="https://x.test/a?b=1&c=2", label="the page"), " now"),))),
    ("hi <@U0JOHN> :tada:", RichText(blocks=(paragraph(
        "hi ", Mention(address="john@acme.test"), " ", Emoji(name="tada")),))),
    ("a &lt;tag&gt; &amp; b", RichText(blocks=(paragraph("a <tag> & b"),))),
    ("snake_case_name and 2*3*4", RichText(blocks=(paragraph("snake_case_name and 2*3*4"),))),
    ("```code\nblock```", RichText(blocks=(CodeBlock(code="code\nblock"),))),
    ("> one\n&gt; quoted\nnot", RichText(blocks=(
        Quote(blocks=(paragraph("one", LineBreak(), "quoted"),)), paragraph("not")))),
    ("line one\nline two", RichText(blocks=(paragraph("line one", LineBreak(), "line two"),))),
    ("<!here> <#C123|general>", RichText(blocks=(paragraph("@here #general"),))),
])
def test_mrkdwn_parses(mrkdwn: str, expected: RichText) -> None:
    assert mrkdwn_to_rich(mrkdwn, address_of) == normalise(expected)


@pytest.mark.parametrize(("tree", "mrkdwn"), [
    (RichText(blocks=(paragraph(text("b", "bold"), " & ", text("c", "code")),)),
     "*b* &amp; `c`"),
    (RichText(blocks=(paragraph(Link(url="https://x.test", label="x <y>")),)),
     "<https://x.test|x &lt;y&gt;>"),
    (RichText(blocks=(paragraph(Mention(address="mary@acme.test")),)), "<@U0MARY>"),
    (RichText(blocks=(CodeBlock(code="a < b"),)), "```a &lt; b```"),
    (RichText(blocks=(Quote(blocks=(paragraph("q"),)),)), "> q"),
    (RichText(blocks=(ListBlock(ordered=True, items=((paragraph("x"),), (paragraph("y"),))),)),
     "1. x\n2. y"),
])
def test_mrkdwn_renders(tree: RichText, mrkdwn: str) -> None:
    assert rich_to_mrkdwn(tree, user_id_of) == mrkdwn


# -- property: canonical -> Slack blocks -> canonical is stable ------------------

_words = st.text(alphabet="abcxyz <>&*_~`:!@#", min_size=1, max_size=6)
_styles = st.lists(st.sampled_from(["bold", "italic", "strike", "code"]), unique=True)
_inline = st.one_of(
    st.builds(lambda w, s: text(w, *s), _words, _styles),
    st.builds(lambda w: Link(url=f"https://x.test/{w}", label=w), _words),
    st.sampled_from([Mention(address="john@acme.test"), Mention(address="mary@acme.test"),
                     Emoji(name="wave", unicode="👋"), LineBreak()]),
)
_paragraph = st.builds(lambda xs: Paragraph(inlines=tuple(xs)), st.lists(_inline, max_size=5))
_leaf = st.one_of(_paragraph, st.builds(lambda c: CodeBlock(code=c), _words),
                  st.builds(lambda p: Quote(blocks=(p,)), _paragraph))


def _lists(depth: int) -> st.SearchStrategy[ListBlock]:
    item = st.builds(lambda p: (p,), _paragraph)
    if depth:
        item = st.one_of(item, st.builds(lambda p, sub: (p, sub), _paragraph, _lists(depth - 1)))
    return st.builds(lambda ordered, items: ListBlock(ordered=ordered, items=tuple(items)),
                     st.booleans(), st.lists(item, min_size=1, max_size=3))


@given(st.lists(st.one_of(_leaf, _lists(2)), max_size=4))
def test_canonical_to_slack_to_canonical_is_stable(blocks: list[Any]) -> None:
    rich = normalise(RichText(blocks=tuple(blocks)))
    # Adjacent lists of the same kind merge in Slack; compare after one round trip.
    once = blocks_to_rich(rich_to_blocks(rich, user_id_of), address_of)
    twice = blocks_to_rich(rich_to_blocks(once, user_id_of), address_of)
    assert twice == once
    if not any(isinstance(a, ListBlock) and isinstance(b, ListBlock)
               for a, b in zip(rich.blocks, rich.blocks[1:], strict=False)):
        assert once == rich
