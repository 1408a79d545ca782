"""The canonical rich-text tree, public for adapters (their translators map to and from it)."""

from ._richtext import STYLE_ORDER as STYLE_ORDER
from ._richtext import Block as Block
from ._richtext import CodeBlock as CodeBlock
from ._richtext import Emoji as Emoji
from ._richtext import Inline as Inline
from ._richtext import LineBreak as LineBreak
from ._richtext import Link as Link
from ._richtext import ListBlock as ListBlock
from ._richtext import Mention as Mention
from ._richtext import Paragraph as Paragraph
from ._richtext import Quote as Quote
from ._richtext import RichText as RichText
from ._richtext import Style as Style
from ._richtext import Text as Text
from ._richtext import paragraph as paragraph
from ._richtext import plain as plain
from ._richtext import text as text
from ._richtext import to_plain_text as to_plain_text
