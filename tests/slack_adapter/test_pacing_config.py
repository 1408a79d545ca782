"""The Slack adapter's pacing keys (``[adapters.pacing]``: posting budgets, Web API tier
budgets) and the embedded sandbox's limits (``[sandbox] rate_limits``, a bool or a
table): defaults, the client they build, and errors naming the key's ``$.path``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.slack import SlackAdapterConfig
from adapters.slack._client import METHOD_TIERS
from adapters.slack._spec import SlackPacingConfig, web_api_settings
from adapters.slack.sandbox import RateLimitTable
from engine import ConfigError
from supervisor._config import Config, load_config


def config_of(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "interlink.toml"
    path.write_text(text)
    return load_config(path)


def slack_entry(config: Config) -> SlackAdapterConfig:
    (entry,) = [a for a in config.adapters if isinstance(a, SlackAdapterConfig)]
    return entry


def test_defaults_follow_slacks_published_limits(tmp_path: Path) -> None:
    entry = slack_entry(config_of(tmp_path, '[[adapters]]\ntype = "slack"\n'))
    assert entry.pacing == SlackPacingConfig()
    settings = web_api_settings(entry, entry.api_url)
    # about one message per second per channel, short bursts; "several hundred messages
    # per minute" per workspace - each adapting up to its ceiling while no 429 comes
    assert (settings.post_message_per_second, settings.post_message_burst,
            settings.post_message_max_per_second) == (1.0, 3, 10.0)
    assert (settings.post_message_workspace_per_minute, settings.post_message_workspace_burst,
            settings.post_message_workspace_max_per_minute) == (500.0, 50, 6000.0)
    assert (settings.pacing_raise_after, settings.pacing_raise_by,
            settings.pacing_back_off_by) == (10.0, 0.25, 0.5)
    # every other method by Slack's tier (1+/20+/50+/100+ a minute), a little under
    assert settings.tier_per_minute == (1.0, 18.0, 45.0, 90.0)
    assert settings.method_tiers == dict(METHOD_TIERS)
    assert (settings.tier_of("conversations.create"), settings.tier_of("users.info")) == (2, 4)


def test_every_pacing_key_reaches_the_web_api_client(tmp_path: Path) -> None:
    entry = slack_entry(config_of(tmp_path, """
[[adapters]]
type = "slack"
[adapters.pacing]
channel_per_second = 2.0
channel_burst = 5
channel_max_per_second = 4.0
workspace_per_minute = 1200
workspace_burst = 100
workspace_max_per_minute = 20000
raise_after = 30
raise_by = 0.1
back_off_by = 0.75
"""))
    settings = web_api_settings(entry, "http://127.0.0.1:1/api/")
    assert (settings.base_url, settings.post_message_per_second, settings.post_message_burst,
            settings.post_message_max_per_second, settings.post_message_workspace_per_minute,
            settings.post_message_workspace_burst,
            settings.post_message_workspace_max_per_minute, settings.pacing_raise_after,
            settings.pacing_raise_by, settings.pacing_back_off_by) == (
        "http://127.0.0.1:1/api/", 2.0, 5, 4.0, 1200.0, 100, 20000.0, 30.0, 0.1, 0.75)


def test_tier_budgets_and_method_tiers_reach_the_web_api_client(tmp_path: Path) -> None:
    entry = slack_entry(config_of(tmp_path, """
[[adapters]]
type = "slack"
[adapters.pacing]
tier_per_minute = [60, 600, 1500.5, 3000]
method_tiers = { "conversations.invite" = 4, "conversations.setTopic" = 1 }
"""))
    settings = web_api_settings(entry, entry.api_url)
    assert settings.tier_per_minute == (60.0, 600.0, 1500.5, 3000.0)
    # an override replaces that method's tier; the others keep Slack's
    assert settings.method_tiers == {**METHOD_TIERS, "conversations.invite": 4,
                                     "conversations.setTopic": 1}
    assert (settings.tier_of("conversations.invite"), settings.tier_of("conversations.create"),
            settings.tier_of("conversations.setTopic")) == (4, 2, 1)


def test_tier_keys_go_with_the_older_post_message_per_second(tmp_path: Path) -> None:
    """The older spelling clashes with the channel key only, not with the tier keys."""
    entry = slack_entry(config_of(tmp_path, '[[adapters]]\ntype = "slack"\n'
                                            'post_message_per_second = 5\n'
                                            '[adapters.pacing]\n'
                                            'tier_per_minute = [2, 40, 100, 200]\n'))
    settings = web_api_settings(entry, entry.api_url)
    assert (settings.post_message_per_second, settings.tier_per_minute) == (
        5.0, (2.0, 40.0, 100.0, 200.0))


def test_the_older_post_message_per_second_still_sets_the_channel_rate(tmp_path: Path
                                                                       ) -> None:
    entry = slack_entry(config_of(tmp_path, '[[adapters]]\ntype = "slack"\n'
                                            'post_message_per_second = 1000\n'))
    settings = web_api_settings(entry, entry.api_url)
    assert (settings.post_message_per_second, settings.post_message_max_per_second) == (
        1000.0, 1000.0)


@pytest.mark.parametrize(("body", "message"), [
    ("[adapters.pacing]\nchannel_burst = 0",
     "Expected `int` >= 1 - at `$.adapters[0].pacing.channel_burst`"),
    ("[adapters.pacing]\nchannel_per_second = 0",
     "Expected `float` > 0.0 - at `$.adapters[0].pacing.channel_per_second`"),
    ("[adapters.pacing]\nback_off_by = 1.5",
     "Expected `float` < 1.0 - at `$.adapters[0].pacing.back_off_by`"),
    ("[adapters.pacing]\nchannel_max_per_second = 0.5",
     "the ceiling must be at least the start rate (1.0) - at "
     "`$.adapters[0].pacing.channel_max_per_second`"),
    ("[adapters.pacing]\nworkspace_per_minute = 900\nworkspace_max_per_minute = 600",
     "the ceiling must be at least the start rate (900.0) - at "
     "`$.adapters[0].pacing.workspace_max_per_minute`"),
    ("[adapters.pacing]\nchanel_per_second = 2",
     "unknown field `chanel_per_second` - at `$.adapters[0].pacing`"),
    ("post_message_per_second = 2\n[adapters.pacing]\nchannel_burst = 2",
     "`post_message_per_second` is the older spelling of `pacing.channel_per_second`: use "
     "one - at `$.adapters[0].post_message_per_second`"),
    ("[adapters.pacing]\ntier_per_minute = [1, 20, 50]",
     "Expected `array` of length >= 4 - at `$.adapters[0].pacing.tier_per_minute`"),
    ("[adapters.pacing]\ntier_per_minute = [1, 20, 50, 100, 600]",
     "Expected `array` of length <= 4 - at `$.adapters[0].pacing.tier_per_minute`"),
    ("[adapters.pacing]\ntier_per_minute = [1, 20, 0, 100]",
     "Expected `float` > 0.0 - at `$.adapters[0].pacing.tier_per_minute[2]`"),
    ("[adapters.pacing]\ntier_per_minute = 20",
     "Expected `array`, got `int` - at `$.adapters[0].pacing.tier_per_minute`"),
    ('[adapters.pacing]\nmethod_tiers = { "conversations.invite" = 5 }',
     "Slack's tiers are 1, 2, 3 and 4, got 5 - at "
     '`$.adapters[0].pacing.method_tiers["conversations.invite"]`'),
    ('[adapters.pacing]\nmethod_tiers = { "conversations.invite" = 0 }',
     "Slack's tiers are 1, 2, 3 and 4, got 0 - at "
     '`$.adapters[0].pacing.method_tiers["conversations.invite"]`'),
    ('[adapters.pacing]\nmethod_tiers = { "conversations.invite" = "2" }',
     "Expected `int`, got `str` - at `$.adapters[0].pacing.method_tiers[...]`"),
    ('[adapters.pacing]\nmethod_tiers = { "conversations.invit" = 2 }',
     "'conversations.invit' is not a Web API method the adapter calls (did you mean "
     "'conversations.invite'?) - at `$.adapters[0].pacing.method_tiers[\"conversations.invit\"]`"),
    ('[adapters.pacing]\nmethod_tiers = { "chat.postMessage" = 4 }',
     "chat.postMessage has no tier: its budgets are the `channel_*` and `workspace_*` keys - "
     'at `$.adapters[0].pacing.method_tiers["chat.postMessage"]`'),
])
def test_a_bad_pacing_key_is_named(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_of(tmp_path, f'[[adapters]]\ntype = "slack"\n{body}\n')


def test_sandbox_rate_limits_are_a_bool_or_a_table(tmp_path: Path) -> None:
    assert config_of(tmp_path, "[sandbox]\n").sandbox.rate_limits is True
    assert config_of(tmp_path, "[sandbox]\nrate_limits = false\n").sandbox.rate_limits is False
    table = config_of(tmp_path, """
[sandbox.rate_limits]
tiers = [1, 20, 50, 100]
channel_per_second = 1
channel_burst = 4
workspace_per_minute = 600
""").sandbox.rate_limits
    assert table == RateLimitTable(channel_burst=4, workspace_per_minute=600)
    with pytest.raises(ConfigError, match=re.escape(
            "Expected `float` > 0.0 - at `$.sandbox.rate_limits.channel_per_second`")):
        config_of(tmp_path, "[sandbox.rate_limits]\nchannel_per_second = -1\n")
