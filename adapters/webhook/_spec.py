"""The webhook adapter's plug into ``interlink run``: its config, check and factory.

Rules:

- Secrets never live in the config: ``inbound_secret`` and ``outbound_secret``
  name an environment variable or a file (:class:`engine.SecretRef`) holding
  a ``whsec_<base64>`` secret, read when the adapter starts. The inbound one
  may hold several secrets separated by spaces (while the partner rotates).
- Which domains the partner serves is the directory's business (domain
  routes naming this adapter's ``name``), as for every platform.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from engine import AdapterSpec, BuildContext, ConfigError, SecretRef, parse_host_port

from ._adapter import WebhookAdapter, WebhookSecrets
from ._config import MIB, WebhookAdapterConfig
from ._signature import parse_secret

__all__ = ["SPEC", "WebhookAdapterConfig", "build_webhook_adapter", "check_webhook_config",
           "read_secrets"]

def check_webhook_config(entry: WebhookAdapterConfig, where: str,
                         context: BuildContext) -> None:
    """What the Struct's types cannot say; :class:`engine.ConfigError` naming the field."""
    parse_host_port(entry.listen, f"{where}.listen")
    if not entry.path.startswith("/") or entry.path == "/healthz":
        raise ConfigError(f"the path must start with '/' and not be /healthz - at "
                          f"`{where}.path`")
    url = urlsplit(entry.partner_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"expected an http(s) URL with a host - at `{where}.partner_url`")
    for field in ("inbound_secret", "outbound_secret"):
        ref: SecretRef = getattr(entry, field)
        if not ref.env and not ref.file:
            raise ConfigError(f"name an `env` or `file` holding a whsec_ secret - at "
                              f"`{where}.{field}`")
    positive = {"max_body_bytes": entry.max_body_bytes, "max_in_flight": entry.max_in_flight,
                "dedupe_entries": entry.dedupe_entries, "max_attempts": entry.max_attempts,
                "request_timeout": entry.request_timeout,
                "partner_timeout": entry.partner_timeout,
                "delivery_budget": entry.delivery_budget}
    for field, value in positive.items():
        if not value > 0:
            raise ConfigError(f"must be positive - at `{where}.{field}`")
    if entry.max_body_bytes > 16 * MIB:
        raise ConfigError(f"at most {16 * MIB} bytes - at `{where}.max_body_bytes`")
    if entry.busy_retry_after < 0 or entry.max_retry_after < 0:
        field = "busy_retry_after" if entry.busy_retry_after < 0 else "max_retry_after"
        raise ConfigError(f"must not be negative - at `{where}.{field}`")
    if not 0 <= entry.retry_initial <= entry.retry_maximum:
        raise ConfigError(f"needs 0 <= retry_initial <= retry_maximum - at "
                          f"`{where}.retry_initial`")


def read_secrets(entry: WebhookAdapterConfig, context: BuildContext) -> WebhookSecrets:
    """Both secrets, parsed; :class:`engine.ConfigError` saying where they were looked for
    (never a value)."""
    found: dict[str, tuple[bytes, ...]] = {}
    for field, many in (("inbound_secret", True), ("outbound_secret", False)):
        ref: SecretRef = getattr(entry, field)
        text = context.secret(ref, f"webhook {field.replace('_', ' ')}")
        if not text:
            raise ConfigError(f"adapter {entry.name!r}: no {field} found in {ref.where()}")
        parts = text.split() if many else [text]
        try:
            found[field] = tuple(parse_secret(part) for part in parts)
        except ValueError as exc:
            raise ConfigError(f"adapter {entry.name!r}: the {field} from {ref.where()} is not "
                              f"a Standard Webhooks secret: {exc}") from None
    return WebhookSecrets(inbound_keys=found["inbound_secret"],
                          outbound_key=found["outbound_secret"][0])


def build_webhook_adapter(entry: WebhookAdapterConfig,
                          context: BuildContext) -> WebhookAdapter:
    """The adapter for a config entry; its secrets are read when it starts."""
    return WebhookAdapter(entry, secrets_source=lambda: read_secrets(entry, context))


SPEC = AdapterSpec(config_type=WebhookAdapterConfig, build=build_webhook_adapter,
                   check=check_webhook_config)
