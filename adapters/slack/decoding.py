"""The Slack adapter's pure decode layer, for tools outside the package (``bench/slack_decode.py``).

Bytes -> view Structs (:mod:`._views`) -> canonical events (:mod:`._translate`),
with no I/O. The adapter's own modules stay private (the import contracts in
``pyproject.toml``); this module re-exports only what decoding needs.
"""

from ._richtext import blocks_to_rich as blocks_to_rich
from ._richtext import mrkdwn_to_rich as mrkdwn_to_rich
from ._translate import PLATFORM as PLATFORM
from ._translate import Decoded as Decoded
from ._translate import Revoked as Revoked
from ._translate import SlackLookup as SlackLookup
from ._translate import canonical_id_for as canonical_id_for
from ._translate import decode_event as decode_event
from ._translate import emoji_from_slack as emoji_from_slack
from ._translate import message_key as message_key
from ._views import EventsBody as EventsBody
from ._views import Malformed as Malformed
from ._views import SlackEvent as SlackEvent
from ._views import read_events_body as read_events_body
from ._views import read_frame as read_frame
