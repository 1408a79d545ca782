"""The XMPP test client lives in the product (the demo script uses it too)."""

from adapters.xmpp._client import Received as Received
from adapters.xmpp._client import TestClient as TestClient
from adapters.xmpp._client import open_client as open_client
