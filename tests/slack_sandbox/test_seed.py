"""Seeds: the example loads; every mistake is one line naming file, field and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.slack.sandbox import load_seed, parse_seed
from engine import ConfigError

from ._kit import seed_text

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_seed_has_acme_john_mary_and_the_interlink_app() -> None:
    seed = load_seed(ROOT / "examples" / "sandbox-seed.toml")
    (acme,) = seed.workspace
    assert (acme.id, acme.name, acme.domain) == ("T0ACME", "Acme", "acme")
    john = next(u for u in acme.user if u.name == "john")
    assert (john.token, john.email) == ("xoxp-john", "john@acme.localhost")
    assert {u.name for u in acme.user} >= {"john", "mary"}
    (app,) = acme.app
    assert (app.id, app.bot_user_id, app.bot_token, app.app_token, app.signing_secret) == (
        "A0INTERLINK", "U0BOT", "xoxb-interlink", "xapp-interlink", "s3cret")
    assert {"chat:write", "chat:write.customize", "commands"} <= set(app.scopes)


BAD_SEEDS = [
    # (change to the test seed, expected field path, expected words)
    (('name = "john"', "name = 7"), "$.workspace[0].user[0].name", "Expected `str`"),
    (('email = "mary@acme.localhost"', 'email = "john@acme.localhost"'),
     "$.workspace[0].user[1].email", "already used"),
    (('id = "U0PETER"', 'id = "peter"'), "$.workspace[0].user[2].id", "expected a user id"),
    (('token = "xoxp-mary"', 'token = "xoxb-mary"'), "$.workspace[0].user[1].token",
     "starting with 'xoxp-'"),
    (('"chat:write.public", ', '"chat.write.public", '), "$.workspace[0].app[0].scopes[2]",
     "unknown scope 'chat.write.public'"),
    (('members = ["U0JOHN", "U0MARY"]', 'members = ["U0JOHN", "U0NOBODY"]'),
     "$.workspace[0].channel[1].members[1]", "'U0NOBODY' is not a user"),
    (('name = "partners"', 'name = "Partners!"'), "$.workspace[0].channel[1].name",
     "expected a channel name"),
    (('domain = "acme"', 'domain = "Acme Corp"'), "$.workspace[0].domain", "expected a domain"),
    (('app_token = "xapp-interlink"', ""), "$.workspace[0].app[0].app_token",
     "Socket Mode and needs an app_token"),
    (('commands = ["/interlink"]', 'commands = ["interlink"]'),
     "$.workspace[0].app[0].commands[0]", "expected a slash command"),
    (('is_admin = true', 'is_admin = true\ncolour = "red"'), "$.workspace[0].user[0]",
     "unknown field `colour`"),
]


@pytest.mark.parametrize(("change", "where", "words"), BAD_SEEDS)
def test_a_bad_seed_names_the_file_the_field_and_the_rule(
        change: tuple[str, str], where: str, words: str) -> None:
    text = seed_text()
    assert change[0] in text
    with pytest.raises(ConfigError) as caught:
        parse_seed(text.replace(change[0], change[1], 1), source="bad.toml")
    message = str(caught.value)
    assert message.startswith("bad.toml: ")
    assert f"`{where}" in message
    assert words in message
    assert "\n" not in message


def test_unreadable_and_invalid_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_seed(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[workspace]\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_seed(broken)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"at least one \[\[workspace\]\] .* `\$.workspace`"):
        load_seed(empty)


def test_an_app_in_two_workspaces_must_agree_on_app_level_fields() -> None:
    second = """
[[workspace]]
id = "T0WIDGET"
name = "Widget"
domain = "widget"

[[workspace.app]]
id = "A0INTERLINK"
name = "Interlink"
bot_user_id = "U0WBOT"
bot_token = "xoxb-widget"
app_token = "xapp-interlink"
signing_secret = "other"
"""
    with pytest.raises(ConfigError, match=r"different signing_secret.*\$.workspace\[1\].app\[0\]"):
        parse_seed(seed_text(extra=second), source="two.toml")
