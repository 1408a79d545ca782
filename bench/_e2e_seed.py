"""What ``bench e2e`` sets up before it starts anything: K Slack users and K XMPP accounts
paired as contacts, as files the three processes read.

The K conversations are spread over W workspaces (1, or 10 for issue #22 item 4's "many
conversations"): conversation ``i`` is in workspace ``j = i % W``, ``T0BENCH<j>``, where
both apps are installed (a bot user and bot token each per workspace; one app-level token
per app, so one Socket Mode connection per app hears every workspace). For conversation
``i`` (``0 <= i < K``):

- Slack user ``UB<i>`` (``s<i>@slack.localhost``, user token ``xoxp-bench-<i>``) in
  workspace ``T0BENCH<j>``, alone with two bots in the private channel ``GB<i>``
  (``bench-<i>``): Interlink's bot and the bench's **observer** app's bot, whose Socket
  Mode events show what reaches Slack (the sandbox's own observation path);
- XMPP account ``x<i>@xmpp.localhost`` (and ``y<i>``, its partner in the raw Prosody
  client-to-client baseline), written straight into Prosody's data directory
  (``prosodyctl register`` costs a process per account: minutes at K = 1,000);
- in Interlink's config: an installation per workspace, the identity of ``s<i>`` (in
  its workspace), the contact ``s<i>`` <-> ``x<i>`` (accepted), and, written into its
  LMDB directory before it starts, their session with ``GB<i>`` as its Slack
  conversation, so no conversation is created during the run (the sandbox's channel,
  the observer in it). The first message in a conversation still makes the adapter
  call ``conversations.invite`` (tier 3): the bench's warm-up does that before anything
  is measured, with the tier budgets raised on both sides (:data:`SETUP_TIER_PER_MINUTE`).

Everything here is pure text/records except :func:`write_prosody_accounts` and
:func:`preseed_sessions`, which write files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine import Address, LmdbDirectory, SessionRecord, session_id_for

SLACK_DOMAIN = "slack.localhost"
XMPP_DOMAIN = "xmpp.localhost"
ADAPTER = "slack"
INTERLINK_APP = "A0INTERLINK"
INTERLINK_APP_TOKEN = "xapp-interlink"
OBSERVER_APP = "A0OBSERVER"
OBSERVER_APP_TOKEN = "xapp-observer"
SIGNING_SECRET = "bench-signing-secret"
COMPONENT_SECRET = "bench-component-secret"
#: the Slack relay's scopes (as the demo seed's, with what private channels need)
INTERLINK_SCOPES = (
    "chat:write", "chat:write.customize", "im:history", "im:read", "im:write",
    "groups:history", "groups:read", "groups:write", "channels:history", "channels:read",
    "reactions:read", "reactions:write", "users:read", "users:read.email",
    "users.profile:read", "files:read", "files:write", "team:read",
)
OBSERVER_SCOPES = ("groups:history", "groups:read")
#: "slack" pacing in the sandbox (its seed's [rate_limits], issue #22 item 2) models
#: Slack's POSTING limits: chat.postMessage about 1 per second per channel with short
#: bursts, and "several hundred messages per minute" per app (or person) per workspace
#: (Slack publishes no number: 600 taken), the method itself "special" at 600 a minute
SLACK_SPECIAL_PER_MINUTE = 600.0
SLACK_CHANNEL_PER_S = 1.0
SLACK_CHANNEL_BURST = 3
SLACK_WORKSPACE_PER_MINUTE = 600.0
SLACK_WORKSPACE_BURST = 50
#: ... and conversation set-up is kept out of the way: every Web API tier (1-4) at 60,000
#: calls a minute, in the sandbox's seed (``tiers``) and in Interlink's
#: ``[adapters.pacing] tier_per_minute``, in both pacings. Real Slack allows 20+ a minute
#: for tier 2 (conversations.create, conversations.setTopic) and 50+ for tier 3
#: (conversations.invite): 1,000 new conversations take about 50 minutes there.
SETUP_TIER_PER_MINUTE = 60_000.0
#: Interlink's own posting keys when the sandbox's limits are off: out of the way
UNPACED_PER_S = 1000.0


@dataclass(frozen=True, slots=True)
class Workspace:
    """Workspace ``number``: its id, and each app's bot user and token in it."""

    number: int

    @property
    def id(self) -> str:
        return f"T0BENCH{self.number}"

    @property
    def bot_user(self) -> str:
        """Interlink's bot user here."""
        return f"U0BOT{self.number}"

    @property
    def bot_token(self) -> str:
        return f"xoxb-interlink-{self.number}"

    @property
    def observer_bot_user(self) -> str:
        return f"U0OBSBOT{self.number}"

    @property
    def observer_bot_token(self) -> str:
        return f"xoxb-observer-{self.number}"


@dataclass(frozen=True, slots=True)
class Pair:
    """Conversation ``index``: one Slack user (in workspace ``workspace``) and one XMPP
    account, contacts."""

    index: int
    workspace: Workspace = Workspace(0)

    @property
    def slack_user(self) -> str:
        return f"UB{self.index:06d}"

    @property
    def slack_token(self) -> str:
        return f"xoxp-bench-{self.index}"

    @property
    def slack_address(self) -> str:
        return f"s{self.index}@{SLACK_DOMAIN}"

    @property
    def channel(self) -> str:
        return f"GB{self.index:06d}"

    @property
    def xmpp_user(self) -> str:
        return f"x{self.index}"

    @property
    def xmpp_jid(self) -> str:
        return f"x{self.index}@{XMPP_DOMAIN}"

    @property
    def partner_user(self) -> str:
        """The raw client-to-client baseline's other end."""
        return f"y{self.index}"

    @property
    def partner_jid(self) -> str:
        return f"y{self.index}@{XMPP_DOMAIN}"

    @property
    def password(self) -> str:
        return f"pw-{self.index}"


@dataclass(frozen=True, slots=True)
class Layout:
    """The K pairs of one scenario, over W workspaces (conversation ``i`` in ``i % W``:
    round-robin sends spread evenly over the workspaces)."""

    conversations: int
    workspaces: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.conversations <= 999_999:
            raise ValueError(f"conversations must be 1-999999, got {self.conversations}")
        if not 1 <= self.workspaces <= min(self.conversations, 999):
            raise ValueError(f"workspaces must be 1-{min(self.conversations, 999)} (at most "
                             f"one per conversation), got {self.workspaces}")

    def all_workspaces(self) -> list[Workspace]:
        return [Workspace(j) for j in range(self.workspaces)]

    def pairs(self) -> Iterator[Pair]:
        spaces = self.all_workspaces()
        return (Pair(i, spaces[i % self.workspaces]) for i in range(self.conversations))

    def channel_index(self) -> dict[str, int]:
        return {pair.channel: pair.index for pair in self.pairs()}


def _toml_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def _tiers(per_minute: float) -> str:
    return "[" + ", ".join([f"{per_minute:g}"] * 4) + "]"


def sandbox_seed(layout: Layout, *, slack_limits: bool = False) -> str:
    """The sandbox's seed: W workspaces with their users and private channels, two apps
    installed in each; with ``slack_limits``, a ``[rate_limits]`` table modelling Slack's
    posting limits, tiers raised (else the sandbox's own defaults, which
    ``--no-rate-limits`` turns off)."""
    lines = ["# generated by bench e2e"]
    if slack_limits:
        lines += ["[rate_limits]", f"tiers = {_tiers(SETUP_TIER_PER_MINUTE)}",
                  f"special_per_minute = {SLACK_SPECIAL_PER_MINUTE:g}",
                  f"channel_per_second = {SLACK_CHANNEL_PER_S:g}",
                  f"channel_burst = {SLACK_CHANNEL_BURST}",
                  f"workspace_per_minute = {SLACK_WORKSPACE_PER_MINUTE:g}",
                  f"workspace_burst = {SLACK_WORKSPACE_BURST}", ""]
    pairs = list(layout.pairs())
    for space in layout.all_workspaces():
        mine = [pair for pair in pairs if pair.workspace == space]
        lines += [
            "[[workspace]]", f'id = "{space.id}"', f'name = "Bench {space.number}"',
            f'domain = "bench{space.number}"', f'email_domain = "{SLACK_DOMAIN}"', "",
        ]
        for pair in mine:
            lines += ["[[workspace.user]]", f'id = "{pair.slack_user}"',
                      f'name = "s{pair.index}"', f'real_name = "Sender {pair.index}"',
                      f'email = "s{pair.index}@{SLACK_DOMAIN}"',
                      f'token = "{pair.slack_token}"', ""]
        for pair in mine:
            members = [pair.slack_user, space.bot_user, space.observer_bot_user]
            lines += ["[[workspace.channel]]", f'id = "{pair.channel}"',
                      f'name = "bench-{pair.index}"', "is_private = true",
                      f"members = {_toml_list(members)}", ""]
        lines += [
            "[[workspace.app]]", f'id = "{INTERLINK_APP}"', 'name = "Interlink"',
            f'bot_user_id = "{space.bot_user}"', f'bot_id = "B0INTERLINK{space.number}"',
            f'bot_token = "{space.bot_token}"', f'app_token = "{INTERLINK_APP_TOKEN}"',
            f'signing_secret = "{SIGNING_SECRET}"', f"scopes = {_toml_list(INTERLINK_SCOPES)}",
            "",
            "[[workspace.app]]", f'id = "{OBSERVER_APP}"', 'name = "Bench observer"',
            f'bot_user_id = "{space.observer_bot_user}"',
            f'bot_id = "B0OBSERVER{space.number}"', f'bot_token = "{space.observer_bot_token}"',
            f'app_token = "{OBSERVER_APP_TOKEN}"', f'signing_secret = "{SIGNING_SECRET}"',
            f"scopes = {_toml_list(OBSERVER_SCOPES)}", 'events = ["message.groups"]', "",
        ]
    return "\n".join(lines)


def engine_config(layout: Layout, *, data_dir: Path, api_url: str, component_port: int,
                  secrets_dir: Path, paced: bool = True) -> str:
    """``interlink run``'s config: Slack (Socket Mode on the sandbox, installed in every
    workspace) and an XMPP component for ``slack.localhost`` on the bench's Prosody; no
    control API, no other listener.

    ``paced``: the Slack adapter's posting keys keep their defaults (Slack's published
    limits); else every posting budget is raised out of the way. Either way the tier
    budgets (``tier_per_minute``) are raised: conversation set-up is not what is measured.
    One Slack domain for every workspace (``tenant`` empty when there are several: each
    identity names its own workspace)."""
    lines = [
        "# generated by bench e2e",
        "[engine]", f'data_dir = "{data_dir}"', "",
        "[logging]", 'level = "info"', 'format = "json"', "",
        "[control]", "enabled = false", "",
        "[[adapters]]", 'type = "slack"', f'name = "{ADAPTER}"', f'api_url = "{api_url}"',
        'mode = "socket"', f'app_token = {{ file = "{secrets_dir / "app_token"}" }}',
        f'signing_secret = {{ file = "{secrets_dir / "signing_secret"}" }}', "",
    ]
    lines += ["[adapters.pacing]", f"tier_per_minute = {_tiers(SETUP_TIER_PER_MINUTE)}"]
    if not paced:
        fast = UNPACED_PER_S
        lines += [f"channel_per_second = {fast:g}",
                  f"channel_max_per_second = {fast:g}", "channel_burst = 1000",
                  f"workspace_per_minute = {fast * 60:g}",
                  f"workspace_max_per_minute = {fast * 60:g}", "workspace_burst = 1000"]
    lines.append("")
    for space in layout.all_workspaces():
        lines += ["[[adapters.installations]]", f'team_id = "{space.id}"',
                  f'bot_token = {{ file = "{secrets_dir / bot_token_file(space)}" }}', ""]
    tenant = layout.all_workspaces()[0].id if layout.workspaces == 1 else ""
    lines += [
        "[[adapters]]", 'type = "xmpp"', f'component_domain = "{SLACK_DOMAIN}"', 'mode = "domain"',
        f'server = "127.0.0.1:{component_port}"',
        f'secret = {{ file = "{secrets_dir / "component_secret"}" }}', "",
        "[[domains]]", f'domain = "{SLACK_DOMAIN}"', 'platform = "slack"',
        f'tenant = "{tenant}"', "internal = true", "",
        "[[domains]]", f'domain = "{XMPP_DOMAIN}"', 'platform = "xmpp"', "",
        "[[agreements]]", f'domain_a = "{SLACK_DOMAIN}"', f'domain_b = "{XMPP_DOMAIN}"',
        'decision = "allow"', "",
    ]
    for pair in layout.pairs():
        lines += ["[[identities]]", f'address = "{pair.slack_address}"', 'platform = "slack"',
                  f'tenant = "{pair.workspace.id}"', f'user_id = "{pair.slack_user}"', "",
                  "[[contacts]]", f'a = "{pair.slack_address}"', f'b = "{pair.xmpp_jid}"', ""]
    return "\n".join(lines)


def bot_token_file(space: Workspace) -> str:
    return f"bot_token.{space.id}"


def write_secrets(secrets_dir: Path, layout: Layout) -> None:
    """The secret files the engine config names (mode 0600; nothing real)."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    tokens = [(bot_token_file(space), space.bot_token) for space in layout.all_workspaces()]
    for name, value in (("app_token", INTERLINK_APP_TOKEN), ("signing_secret", SIGNING_SECRET),
                        *tokens, ("component_secret", COMPONENT_SECRET)):
        path = secrets_dir / name
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)


def _lua_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def prosody_host_dir(domain: str) -> str:
    """How Prosody names a host's data directory (``.`` as ``%2e``, ``-`` as ``%2d``)."""
    return "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in domain)


def write_prosody_accounts(state_dir: Path, layout: Layout) -> int:
    """Accounts ``x<i>`` and ``y<i>`` in Prosody's ``internal_plain`` store; how many."""
    accounts = state_dir / "data" / prosody_host_dir(XMPP_DOMAIN) / "accounts"
    accounts.mkdir(parents=True, exist_ok=True)
    count = 0
    for pair in layout.pairs():
        for user in (pair.xmpp_user, pair.partner_user):
            (accounts / f"{user}.dat").write_text(
                f'return {{\n\t["password"] = "{_lua_escape(pair.password)}";\n}};\n',
                encoding="utf-8")
            count += 1
    return count


async def preseed_sessions(directory_path: Path, layout: Layout) -> int:
    """Each pair's session, with its Slack conversation, in the engine's LMDB directory."""
    directory = await LmdbDirectory.open(directory_path)
    try:
        for pair in layout.pairs():
            a, b = sorted((Address.parse(pair.slack_address), Address.parse(pair.xmpp_jid)))
            await directory.put_session(SessionRecord(
                session_id=session_id_for(a, b), a=a, b=b,
                conversation_ids={ADAPTER: pair.channel}))
        await directory.flush()
    finally:
        await directory.aclose()
    return layout.conversations
