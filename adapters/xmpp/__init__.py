"""The XMPP adapter: an XMPP server component (XEP-0114) with a pure stanza translation layer.

What other packages may use is re-exported here; modules stay private.
"""

from ._adapter import XmppAdapter as XmppAdapter
from ._adapter import XmppSettings as XmppSettings
from ._client import Received as Received
from ._client import TestClient as TestClient
from ._client import open_client as open_client
from ._jid import AddressingSettings as AddressingSettings
from ._prosody import ProsodyInstance as ProsodyInstance
from ._prosody import ProsodySettings as ProsodySettings
from ._prosody import run_prosody as run_prosody
from ._spec import PROSODY as PROSODY
from ._spec import SPEC as SPEC
from ._spec import ProsodyHandle as ProsodyHandle
from ._spec import ProsodySection as ProsodySection
from ._spec import XmppAdapterConfig as XmppAdapterConfig
