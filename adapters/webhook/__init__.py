"""The generic HTTP webhook adapter: a partner system posts signed JSON to Interlink and
receives Interlink's events at its own URL, both per Standard Webhooks.

Written against the public engine API only (``engine``, ``engine.richtext``).
What other packages may use is re-exported here; modules stay private.
See ``docs/webhook-adapter.md``.
"""

from ._adapter import CAPABILITIES as CAPABILITIES
from ._adapter import WebhookAdapter as WebhookAdapter
from ._adapter import WebhookSecrets as WebhookSecrets
from ._adapter import WebhookStats as WebhookStats
from ._config import WebhookAdapterConfig as WebhookAdapterConfig
from ._decode import PayloadError as PayloadError
from ._signature import SignatureError as SignatureError
from ._signature import parse_secret as parse_secret
from ._signature import sign as sign
from ._signature import signature_headers as signature_headers
from ._signature import verify as verify
from ._spec import SPEC as SPEC
from ._spec import build_webhook_adapter as build_webhook_adapter
from ._spec import check_webhook_config as check_webhook_config
from ._spec import read_secrets as read_secrets
