"""The webhook adapter's ``[[adapters]]`` entry (``type = "webhook"``).

Secrets are not here: ``inbound_secret`` and ``outbound_secret`` only say
where to read them (``_spec.py`` reads them when the adapter starts).
"""

from __future__ import annotations

from engine import AdapterConfig, SecretRef

__all__ = ["MIB", "WebhookAdapterConfig"]

MIB = 1024 * 1024


class WebhookAdapterConfig(AdapterConfig, frozen=True, kw_only=True, tag="webhook",
                           tag_field="type"):
    name: str = "webhook"
    #: HOST:PORT the partner POSTs to (port 0: a free one, for tests)
    listen: str = "127.0.0.1:8090"
    #: the path the partner POSTs to
    path: str = "/webhook"
    #: where Interlink POSTs the partner's events (http or https)
    partner_url: str
    #: the secret the partner signs its requests with (``whsec_...``)
    inbound_secret: SecretRef = SecretRef(env="WEBHOOK_INBOUND_SECRET")
    #: the secret Interlink signs its requests to the partner with (``whsec_...``)
    outbound_secret: SecretRef = SecretRef(env="WEBHOOK_OUTBOUND_SECRET")
    #: the largest request body taken (larger: 413)
    max_body_bytes: int = 256 * 1024
    #: seconds a request's body may take to arrive (slower: 408)
    request_timeout: float = 10.0
    #: requests handled at once (more: 503 with Retry-After)
    max_in_flight: int = 256
    #: webhook-ids remembered for idempotency (oldest accepted forgotten first)
    dedupe_entries: int = 100_000
    #: the Retry-After (seconds) of a 503 when the engine is busy
    busy_retry_after: int = 1
    #: seconds for one POST to the partner
    partner_timeout: float = 10.0
    #: seconds for all attempts of one delivery
    delivery_budget: float = 20.0
    #: attempts of one delivery
    max_attempts: int = 4
    #: backoff between attempts, when the partner gives no Retry-After
    retry_initial: float = 0.5
    retry_maximum: float = 8.0
    #: the longest Retry-After honoured (seconds)
    max_retry_after: float = 60.0
