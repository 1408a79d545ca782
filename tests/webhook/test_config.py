"""The webhook adapter's config entry, its check, its secrets and its factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.webhook import (
    SPEC,
    WebhookAdapter,
    WebhookAdapterConfig,
    build_webhook_adapter,
    check_webhook_config,
    parse_secret,
    read_secrets,
)
from engine import BuildContext, ConfigError, SecretRef

from .conftest import new_secret

WHERE = "$.adapters[2]"


def _entry(**fields: Any) -> WebhookAdapterConfig:
    raw = {"type": "webhook", "partner_url": "https://partner.example/interlink",
           "inbound_secret": {"file": "in.secret"}, "outbound_secret": {"file": "out.secret"},
           **fields}
    return msgspec.convert(raw, WebhookAdapterConfig)


def test_an_entry_decodes_with_defaults_and_its_tag() -> None:
    entry = _entry()
    assert (entry.name, entry.listen, entry.path) == ("webhook", "127.0.0.1:8090", "/webhook")
    assert SPEC.config_type is WebhookAdapterConfig
    check_webhook_config(entry, WHERE, BuildContext(base_dir=Path(".")))
    with pytest.raises(msgspec.ValidationError, match="unknown field `secret`"):
        msgspec.convert({"type": "webhook", "partner_url": "https://x", "secret": "whsec_x"},
                        WebhookAdapterConfig)


@pytest.mark.parametrize(("fields", "field"), [
    ({"listen": "8090"}, "listen"),
    ({"path": "webhook"}, "path"),
    ({"path": "/healthz"}, "path"),
    ({"partner_url": "ftp://partner.example/"}, "partner_url"),
    ({"partner_url": "https:///no-host"}, "partner_url"),
    ({"inbound_secret": {}}, "inbound_secret"),
    ({"outbound_secret": {"env": "", "file": ""}}, "outbound_secret"),
    ({"max_body_bytes": 0}, "max_body_bytes"),
    ({"max_body_bytes": 64 * 1024 * 1024}, "max_body_bytes"),
    ({"dedupe_entries": 0}, "dedupe_entries"),
    ({"delivery_budget": 0.0}, "delivery_budget"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"busy_retry_after": -1}, "busy_retry_after"),
    ({"retry_initial": 5.0, "retry_maximum": 1.0}, "retry_initial"),
])
def test_the_check_names_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_webhook_config(_entry(**fields), WHERE, BuildContext(base_dir=Path(".")))
    assert f"`{WHERE}.{field}`" in str(caught.value)


def test_secrets_are_read_from_files_and_the_environment(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    old, new, out = new_secret(), new_secret(), new_secret()
    (tmp_path / "in.secret").write_text(f"{old} {new}\n")
    monkeypatch.setenv("TEST_WEBHOOK_OUT", out)
    entry = _entry(outbound_secret={"env": "TEST_WEBHOOK_OUT", "file": "missing"})
    found = read_secrets(entry, BuildContext(base_dir=tmp_path))
    assert found.inbound_keys == (parse_secret(old), parse_secret(new))  # rotation
    assert found.outbound_key == parse_secret(out)
    assert "redacted" in repr(found) and old not in repr(found)


@pytest.mark.parametrize(("content", "says"), [
    (None, "no inbound_secret found in file"),
    ("not-a-secret", "not a Standard Webhooks secret"),
])
def test_missing_or_malformed_secrets_are_config_errors(tmp_path: Path, content: str | None,
                                                        says: str) -> None:
    if content is not None:
        (tmp_path / "in.secret").write_text(content)
    (tmp_path / "out.secret").write_text(new_secret())
    with pytest.raises(ConfigError, match=says) as caught:
        read_secrets(_entry(), BuildContext(base_dir=tmp_path))
    assert "not-a-secret" not in str(caught.value)


async def test_the_factory_builds_an_adapter_that_reads_its_secrets_when_it_starts(
        tmp_path: Path) -> None:
    entry = _entry(name="partner-a", listen="127.0.0.1:0")
    adapter = build_webhook_adapter(entry, BuildContext(base_dir=tmp_path))
    assert isinstance(adapter, WebhookAdapter)
    assert adapter.name == "partner-a"
    assert {"edits", "retractions", "reactions", "contacts", "outcomes"} <= \
        adapter.capabilities
    with pytest.raises(ConfigError, match=r"in\.secret"):
        await adapter.run(None)  # type: ignore[arg-type]


def test_secret_refs_never_hold_values() -> None:
    assert SecretRef(env="X").where() == "environment variable X"
    assert "whsec" not in msgspec.json.encode(_entry()).decode()
