"""The e2e suite's pieces, without starting any process: the sequence check, the load
driver over an in-process fake path, the generated seed and config, and the JSON shape.

The suite itself (three processes and up to 2,000 XMPP logins) is a benchmark, not a
test: ``python -m bench e2e --quick``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from adapters.slack import SlackAdapterConfig
from adapters.slack._spec import web_api_settings
from adapters.slack.sandbox import parse_seed
from bench._e2e import (
    Block,
    Direction,
    E2eConfig,
    E2eReport,
    PathResult,
    ProcessCpu,
    Sink,
    block_in_flight,
    block_lanes,
    build_report,
    drive,
    e2e_table,
    make_scenario,
    offered_drain_timeout,
    paced_rest,
    paced_trials,
    setup_timeout,
)
from bench._e2e_check import Integrity, SequenceCheck, message_text, parse_text
from bench._e2e_net import PostPacer
from bench._e2e_seed import (
    COMPONENT_SECRET,
    SETUP_TIER_PER_MINUTE,
    Layout,
    Pair,
    Workspace,
    engine_config,
    prosody_host_dir,
    sandbox_seed,
    write_prosody_accounts,
    write_secrets,
)
from bench._load import Timeline
from bench._plot import plot_e2e
from bench._report import encode_json
from bench._trials import summarize
from bench.cli import main
from supervisor import load_config
from supervisor._config import Config
from tests.test_bench import check_report, struct_fields

E2E_GOLDEN_FIELDS: dict[str, list[str]] = {
    "Report": ["suite", "schema_version", "generated_at", "duration_s", "machine", "params",
               "results", "baseline", "ratio_to_baseline"],
    "Machine": ["cpu", "cores", "python", "platform"],
    "Baseline": ["name", "description", "throughput_msgs_per_s", "latency_us"],
    "LatencyUs": ["p50", "p99", "p999", "max", "mean", "samples"],
    "Run": ["mode", "load_fraction", "offered_msgs_per_s", "throughput_msgs_per_s",
            "throughput_trials", "spread_pct", "latency_us", "p99_trials_us",
            "events_per_trial", "complete"],
    "E2eParams": ["conversations", "pacings", "directions", "loads", "trials", "trial_seconds",
                  "min_events", "max_events", "window", "per_conversation", "lanes",
                  "setup_timeout_s", "drain_timeout_s", "slack_pacing_model",
                  "spread_conversations", "spread_workspaces",
                  "offered_per_conversation_msgs_per_s", "setup_tier_per_minute",
                  "paced_trial_bursts", "quick", "versions"],
    "E2eResults": ["throughput_msgs_per_s", "latency_us", "headline", "scenarios"],
    "E2eHeadline": ["direction", "conversations", "pacing", "workspaces"],
    "E2eScenario": ["direction", "conversations", "pacing", "workspaces",
                    "offered_per_conversation_msgs_per_s", "status", "detail",
                    "throughput_msgs_per_s", "ratio_to_baseline",
                    "baseline_throughput_msgs_per_s", "baseline_path",
                    "engine_cpu_us_per_msg", "latency_us", "lost", "duplicated", "reordered",
                    "setup_s", "interlink", "raw_sandbox", "raw_prosody"],
    "LatencyAtLoad": ["load", "offered_msgs_per_s", "throughput_msgs_per_s", "p50", "p99"],
    "PathResult": ["path", "maximum", "loads", "integrity", "cpu_us_per_msg", "ratelimited"],
    "Integrity": ["sent", "received", "lost", "duplicated", "reordered", "unexpected"],
    "ProcessCpu": ["engine", "engine_writers", "sandbox", "prosody", "driver", "total"],
}


def test_the_e2e_schema_matches_its_golden_field_lists() -> None:
    assert struct_fields(E2eReport) == E2E_GOLDEN_FIELDS


# -- the sequence check ---------------------------------------------------------------
def _check(sent: dict[int, int], arrivals: list[tuple[int, int]]) -> Integrity:
    check = SequenceCheck("t1")
    for conversation, count in sent.items():
        for seq in range(count):
            check.sent(conversation, seq)
    for conversation, seq in arrivals:
        check.arrived(conversation, seq)
    return check.result()


@pytest.mark.parametrize(("arrivals", "lost", "duplicated", "reordered", "unexpected"), [
    ([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], 0, 0, 0, 0),
    ([(0, 0), (0, 2), (1, 0), (1, 1)], 1, 0, 0, 0),                  # 0/1 never came
    ([(0, 0), (0, 1), (0, 1), (0, 2), (1, 0), (1, 1), (1, 1)], 0, 2, 0, 0),
    ([(0, 1), (0, 0), (0, 2), (1, 1), (1, 0)], 0, 0, 2, 0),          # 0/0 and 1/0 late
    ([(0, 2), (0, 0), (0, 1), (1, 0), (1, 1)], 0, 0, 2, 0),          # both after 0/2
    ([(0, 1), (0, 0), (0, 0), (0, 2), (1, 0), (1, 1)], 0, 1, 1, 0),  # a late copy: dup only
    ([(0, 0), (0, 1), (0, 2), (0, 3), (2, 0), (1, 0), (1, 1)], 0, 0, 0, 2),
    ([], 5, 0, 0, 0),
])
def test_the_sequence_check_counts_lost_duplicated_and_reordered(
        arrivals: list[tuple[int, int]], lost: int, duplicated: int, reordered: int,
        unexpected: int) -> None:
    result = _check({0: 3, 1: 2}, arrivals)
    assert (result.sent, result.lost, result.duplicated, result.reordered,
            result.unexpected) == (5, lost, duplicated, reordered, unexpected)
    assert result.received == 5 - lost


def test_messages_carry_their_run_conversation_and_number() -> None:
    text = message_text("r7ab", 12, 345)
    assert parse_text(text) == ("r7ab", 12, 345)
    assert parse_text(f"*Sender 3*: {text}") == ("r7ab", 12, 345)  # decorated by a relay
    assert parse_text("hello") is None
    check = SequenceCheck("r7ab")
    check.sent(12, 345)
    assert not check.arrived_text(message_text("other", 12, 345))  # another run's: ignored
    assert check.arrived_text(text) and check.result().received == 1


# -- the driver over an in-process path ------------------------------------------------
FakePath = Callable[[Pair, str, int], Any]


def _loopback(sink: Sink, *, drop: AbstractSet[int] = frozenset(),
              twice: AbstractSet[int] = frozenset(),
              hold: AbstractSet[int] = frozenset()) -> FakePath:
    """Delivers each message at once through ``sink``; drops, doubles or holds back
    (until the next one of its conversation) the messages whose global numbers are listed."""
    held: dict[int, list[str]] = {}

    async def send(pair: Pair, text: str, g: int) -> None:
        await trio.lowlevel.checkpoint()
        if g in drop:
            return
        if g in hold:
            held.setdefault(pair.index, []).append(text)
            return
        sink.from_xmpp(pair.index, text)
        for late in held.pop(pair.index, []):
            sink.from_xmpp(pair.index, late)
        if g in twice:
            sink.from_xmpp(pair.index, text)

    return send


@pytest.mark.parametrize("rate", [None, 20_000.0])
async def test_the_driver_counts_what_a_path_loses_doubles_and_reorders(
        rate: float | None) -> None:
    pairs = list(Layout(3).pairs())
    sink = Sink(channels={}, xmpp=True)
    # message g goes to conversation g % 3 as number g // 3: 4 -> c1 n1, 7 -> c1 n2
    send = _loopback(sink, drop={5}, twice={0}, hold={4})
    trial = await drive(send, pairs, sink, 12, rate=rate, lanes=1, window=4,
                        per_conversation=2, drain_timeout=0.05)
    assert trial.integrity == Integrity(sent=12, received=11, lost=1, duplicated=1,
                                        reordered=1, unexpected=0)
    assert trial.timeline.completed_count == 11
    assert sink.check is None  # detached after the run


async def test_a_message_in_the_wrong_conversation_is_unexpected() -> None:
    pairs = list(Layout(2).pairs())
    sink = Sink(channels={}, xmpp=True)

    async def crossed(pair: Pair, text: str, g: int) -> None:
        sink.from_xmpp(1 - pair.index if g == 2 else pair.index, text)

    trial = await drive(crossed, pairs, sink, 4, rate=None, lanes=2, window=4,
                        drain_timeout=0.05)
    assert (trial.integrity.lost, trial.integrity.unexpected) == (1, 1)


async def test_a_closed_loop_keeps_each_conversation_in_order_with_several_lanes() -> None:
    pairs = list(Layout(5).pairs())
    sink = Sink(channels={}, xmpp=True)
    trial = await drive(_loopback(sink), pairs, sink, 100, rate=None, lanes=3, window=8,
                        drain_timeout=1.0)
    assert trial.integrity == Integrity(sent=100, received=100, lost=0, duplicated=0,
                                        reordered=0, unexpected=0)
    assert trial.timeline.done


async def test_senders_stop_at_the_time_cap_and_the_trial_is_what_was_sent() -> None:
    pairs = list(Layout(1).pairs())
    sink = Sink(channels={}, xmpp=True)
    trial = await drive(_loopback(sink), pairs, sink, 1000, rate=100.0, lanes=1, window=4,
                        drain_timeout=1.0, send_for=0.05)
    assert 1 <= trial.integrity.sent <= 6  # 100/s for 50 ms
    assert trial.timeline.count == trial.integrity.sent == trial.integrity.received


def test_slack_arrivals_count_only_for_the_app_the_run_listens_to() -> None:
    layout = Layout(2)
    sink = Sink(channels=layout.channel_index(), slack_app="observer")
    check = SequenceCheck("t")
    check.sent(1, 0)
    sink.check = check
    text = message_text("t", 1, 0)
    sink.from_slack("interlink", "GB000001", text)
    sink.from_xmpp(1, text)  # XMPP arrivals are off in this run
    assert check.result().received == 0
    sink.from_slack("observer", "GB000000", text)  # wrong channel
    sink.from_slack("observer", "GB000001", text)
    assert (check.result().received, check.result().unexpected) == (1, 1)


# -- what the processes are given --------------------------------------------------------
def test_the_seed_is_valid_and_pairs_each_user_with_a_private_channel() -> None:
    seed = parse_seed(sandbox_seed(Layout(3)), source="bench")
    [workspace] = seed.workspace
    assert workspace.id == "T0BENCH0"
    assert [u.id for u in workspace.user] == ["UB000000", "UB000001", "UB000002"]
    assert {c.id: c.members for c in workspace.channel}["GB000001"] == [
        "UB000001", "U0BOT0", "U0OBSBOT0"]
    assert all(c.is_private for c in workspace.channel)
    assert [a.id for a in workspace.app] == ["A0INTERLINK", "A0OBSERVER"]
    assert seed.rate_limits is None  # the sandbox's defaults; --no-rate-limits for "off"


def test_slack_pacing_models_posting_limits_with_set_up_out_of_the_way() -> None:
    limited = parse_seed(sandbox_seed(Layout(1), slack_limits=True), source="bench")
    assert limited.rate_limits is not None
    limits = limited.rate_limits
    # chat.postMessage as Slack: 1/s per channel (burst 3), 600/min per app per workspace
    assert (limits.channel_per_second, limits.channel_burst, limits.workspace_per_minute,
            limits.workspace_burst, limits.special_per_minute) == (1.0, 3, 600.0, 50, 600.0)
    # every tier raised (conversations.invite, .setTopic, .create ...): set-up in seconds
    assert limits.tiers == [SETUP_TIER_PER_MINUTE] * 4 == [60_000.0] * 4


def test_the_many_conversations_seed_has_ten_workspaces_of_a_hundred_pairs() -> None:
    layout = Layout(1000, 10)
    seed = parse_seed(sandbox_seed(layout, slack_limits=True), source="bench")
    assert [w.id for w in seed.workspace] == [f"T0BENCH{j}" for j in range(10)]
    assert {len(w.user) for w in seed.workspace} == {100}
    assert {len(w.channel) for w in seed.workspace} == {100}
    # conversation i in workspace i % 10: round-robin sends spread over every workspace
    third = seed.workspace[3]
    assert [u.id for u in third.user][:3] == ["UB000003", "UB000013", "UB000023"]
    assert {c.id: c.members for c in third.channel}["GB000013"] == [
        "UB000013", "U0BOT3", "U0OBSBOT3"]
    # both apps installed in each workspace: a bot user and token there, one app token
    for workspace in seed.workspace:
        apps = {a.id: a for a in workspace.app}
        assert apps["A0INTERLINK"].bot_token == f"xoxb-interlink-{workspace.id[-1]}"
        assert apps["A0INTERLINK"].app_token == "xapp-interlink"
        assert apps["A0OBSERVER"].app_token == "xapp-observer"
    pairs = list(layout.pairs())
    assert (pairs[13].workspace, pairs[13].workspace.bot_token) == (
        Workspace(3), "xoxb-interlink-3")
    with pytest.raises(ValueError, match="workspaces must be 1-4"):
        Layout(4, 5)


def _engine_config(tmp_path: Path, layout: Layout, *, paced: bool) -> Config:
    write_secrets(tmp_path / "secrets", layout)
    config_path = tmp_path / "interlink.toml"
    config_path.write_text(engine_config(
        layout, data_dir=tmp_path / "data", api_url="http://127.0.0.1:1/api/",
        component_port=5347, secrets_dir=tmp_path / "secrets", paced=paced))
    return load_config(config_path)


def _slack(config: Config) -> SlackAdapterConfig:
    [slack] = [a for a in config.adapters if isinstance(a, SlackAdapterConfig)]
    return slack


def test_the_engine_config_loads_with_every_pair_as_identity_and_contact(
        tmp_path: Path) -> None:
    config = _engine_config(tmp_path, Layout(3), paced=False)
    slack = _slack(config)
    assert (slack.pacing.workspace_per_minute, slack.pacing.channel_per_second) == (60_000, 1000)
    assert [i.address for i in config.identities] == [
        "s0@slack.localhost", "s1@slack.localhost", "s2@slack.localhost"]
    assert {i.tenant for i in config.identities} == {"T0BENCH0"}
    assert [(c.a, c.b, c.state) for c in config.contacts][1] == (
        "s1@slack.localhost", "x1@xmpp.localhost", "accepted")
    assert (config.domains[0].domain, config.domains[0].tenant) == ("slack.localhost", "T0BENCH0")
    assert not config.control.enabled
    assert (tmp_path / "secrets" / "component_secret").read_text().strip() == COMPONENT_SECRET


@pytest.mark.parametrize("paced", [True, False])
def test_interlink_s_tier_budgets_are_raised_in_both_pacings(tmp_path: Path,
                                                             paced: bool) -> None:
    """Set-up (conversations.invite on first use) is kept out of the measured window: the
    tier keys reach the Web API client; the posting keys keep their defaults when paced."""
    slack = _slack(_engine_config(tmp_path, Layout(2), paced=paced))
    settings = web_api_settings(slack, slack.api_url)
    assert settings.tier_per_minute == (SETUP_TIER_PER_MINUTE,) * 4
    assert settings.tier_of("conversations.invite") == 3  # Slack's tier, raised
    if paced:
        assert (settings.post_message_per_second, settings.post_message_workspace_per_minute
                ) == (1.0, 500.0)
    else:
        assert settings.post_message_workspace_per_minute == 60_000.0


def test_the_many_conversations_config_installs_interlink_in_every_workspace(
        tmp_path: Path) -> None:
    config = _engine_config(tmp_path, Layout(20, 10), paced=True)
    slack = _slack(config)
    assert [i.team_id for i in slack.installations] == [f"T0BENCH{j}" for j in range(10)]
    token = slack.installations[7].bot_token.file
    assert token is not None and Path(token).read_text().strip() == "xoxb-interlink-7"
    # one Slack domain for every workspace; each identity names its own
    assert (config.domains[0].domain, config.domains[0].tenant) == ("slack.localhost", "")
    tenants = {i.address: i.tenant for i in config.identities}
    assert (tenants["s7@slack.localhost"], tenants["s17@slack.localhost"]) == (
        "T0BENCH7", "T0BENCH7")


def test_prosody_accounts_are_written_as_its_internal_store_reads_them(tmp_path: Path) -> None:
    assert write_prosody_accounts(tmp_path, Layout(2)) == 4
    assert prosody_host_dir("xmpp.localhost") == "xmpp%2elocalhost"
    account = tmp_path / "data" / "xmpp%2elocalhost" / "accounts" / "y1.dat"
    assert account.read_text() == 'return {\n\t["password"] = "pw-1";\n};\n'


# -- the report ------------------------------------------------------------------------------
def _path(name: str, rate: float, loads: tuple[float, ...] = ()) -> PathResult:
    def timeline(per_s: float, count: int = 10) -> Timeline:
        line = Timeline(count, now=lambda: 0.0)
        for i in range(count):
            line.scheduled[i] = 1.0 + i / per_s
            line.completed[i] = line.scheduled[i] + 0.002
        return line

    return PathResult(
        path=name, maximum=summarize([timeline(rate)], mode="max"),
        loads=[summarize([timeline(rate * f)], mode="open", load_fraction=f,
                         offered=rate * f) for f in loads],
        integrity=Integrity(sent=10, received=10, lost=0, duplicated=0, reordered=0,
                            unexpected=0),
        cpu_us_per_msg=ProcessCpu(engine=900.0, engine_writers=50.0, sandbox=400.0,
                                  prosody=60.0, driver=300.0, total=1710.0),
        ratelimited=0)


def test_a_report_carries_one_scenario_per_direction_k_pacing_and_workspaces(
        tmp_path: Path) -> None:
    config = E2eConfig(conversations=(1,), loads=(0.5,), spread_conversations=1000)
    scenarios = [
        make_scenario("slack_to_xmpp", 1, "off", _path("interlink", 400.0, (0.5,)),
                      _path("raw_sandbox", 800.0), _path("raw_prosody", 5000.0), (0.3, "")),
        make_scenario("xmpp_to_slack", 1, "off", None, _path("raw_sandbox", 900.0),
                      _path("raw_prosody", 5000.0),
                      (20.0, "warm-up: 0 of 1 conversations carried their first message")),
        make_scenario("xmpp_to_slack", 1000, "slack", _path("interlink", 83.0, (0.25, 0.5)),
                      _path("raw_sandbox", 100.0), _path("raw_prosody", 1000.0), (12.0, ""),
                      workspaces=10, offered=1.0),
    ]
    report = build_report(config, scenarios, 1.0)
    data = check_report(encode_json(report), E2eReport, "e2e")
    assert data["schema_version"] == 3
    assert (data["params"]["spread_conversations"], data["params"]["spread_workspaces"],
            data["params"]["offered_per_conversation_msgs_per_s"]) == (1000, 10, 1.0)
    first, second, many = data["results"]["scenarios"]
    assert (first["workspaces"], first["offered_per_conversation_msgs_per_s"]) == (1, None)
    assert (many["conversations"], many["workspaces"], many["pacing"],
            many["offered_per_conversation_msgs_per_s"]) == (1000, 10, "slack", 1.0)
    # per direction: throughput, ratio to the slower raw platform, p50/p99 at 50 %
    assert many["baseline_path"] == "raw_sandbox"
    assert many["ratio_to_baseline"] == pytest.approx(0.83, rel=0.05)
    assert [p["load"] for p in many["latency_us"]] == ["max", "25%", "50%"]
    assert many["latency_us"][2]["p99"] > 0
    assert (many["lost"], many["duplicated"], many["reordered"],
            many["engine_cpu_us_per_msg"]) == (0, 0, 0, 900.0)
    assert data["results"]["headline"] == {"direction": "slack_to_xmpp", "conversations": 1,
                                           "pacing": "off", "workspaces": 1}
    table = e2e_table(report)
    assert "slack 1/s each" in table and "offered:" in table
    assert (first["status"], first["baseline_path"]) == ("ok", "raw_sandbox")
    assert first["ratio_to_baseline"] == pytest.approx(
        first["throughput_msgs_per_s"] / first["raw_sandbox"]["maximum"]["throughput_msgs_per_s"])
    assert first["ratio_to_baseline"] == pytest.approx(0.5, rel=0.1)
    assert [p["load"] for p in first["latency_us"]] == ["max", "50%"]
    assert first["engine_cpu_us_per_msg"] == 900.0
    assert (first["lost"], first["duplicated"], first["reordered"]) == (0, 0, 0)
    assert (second["status"], second["interlink"]) == ("setup_incomplete", None)
    assert data["ratio_to_baseline"] == pytest.approx(first["ratio_to_baseline"])
    assert "warm-up: 0 of 1" in e2e_table(report)
    plot_e2e(report, tmp_path / "e2e.png")
    assert (tmp_path / "e2e.png").read_bytes().startswith(b"\x89PNG")
    assert msgspec.json.decode(encode_json(report), type=E2eReport) == report


def test_the_suite_measures_many_conversations_over_ten_workspaces_at_k_1000() -> None:
    full = E2eConfig.full()
    assert full.sizes() == [1, 100, 1000]
    assert full.blocks(1) == [Block("off"), Block("slack")]
    assert full.blocks(1000) == [Block("off"), Block("slack"), Block("slack", 10, 1.0)]
    quick = E2eConfig.quick_run()  # a smaller K for the spread, its own Prosody
    assert quick.sizes() == [4, 20]
    assert (quick.blocks(4), quick.blocks(20)) == (
        [Block("off"), Block("slack")], [Block("slack", 10, 1.0)])
    assert E2eConfig(conversations=(1,), spread_conversations=0).sizes() == [1]


def test_set_up_and_drain_bounds_follow_the_modelled_limits() -> None:
    config = E2eConfig.full()
    # unpaced: the configured bound; paced: what Interlink's 500/min (after a burst of
    # 50) takes to post one message in each conversation of a workspace, 1.5x
    assert setup_timeout(config, Block("off"), 1000) == 60.0
    assert setup_timeout(config, Block("slack"), 1000) == pytest.approx(60 + 1.5 * 950 * 0.12)
    assert setup_timeout(config, Block("slack", 10, 1.0), 1000) == pytest.approx(
        60 + 1.5 * 50 * 0.12)
    assert setup_timeout(config, Block("slack"), 4) == 60.0
    # 2,000 messages offered; ten workspaces carry 100/s: 30 s, more than the 20 s default
    assert offered_drain_timeout(config, Block("slack", 10, 1.0), 1000) == pytest.approx(30.0)
    assert offered_drain_timeout(config, Block("slack"), 1000) == 20.0
    assert block_lanes(config, Block("slack", 10, 1.0)) == 20
    # closed loop: 2 in flight keep a channel busy at 1/s; unpaced, the configured 8
    assert (block_in_flight(config, Block("slack")), block_in_flight(config, Block("off"))) == (
        2, 8)
    # Interlink is measured once the budgets its warm-up spent are full again
    assert paced_rest(Block("off"), 1000, "xmpp_to_slack") == 0.0
    assert paced_rest(Block("slack"), 1000, "slack_to_xmpp") == 1.0
    assert paced_rest(Block("slack"), 1000, "xmpp_to_slack") == pytest.approx(6.0)
    assert paced_rest(Block("slack", 10, 1.0), 20, "xmpp_to_slack") == 1.0


@pytest.mark.parametrize(("block", "k", "direction", "limit", "floor"), [
    (Block("off"), 100, "xmpp_to_slack", math.inf, 0),
    # the bot's posts: 1/s in each of K channels, or 10/s per workspace, whichever is less
    (Block("slack"), 1, "xmpp_to_slack", 1.0, 12),
    (Block("slack"), 100, "xmpp_to_slack", 10.0, 200),
    (Block("slack", 10, 1.0), 1000, "xmpp_to_slack", 100.0, 2000),
    # each person in their own channel
    (Block("slack"), 100, "slack_to_xmpp", 100.0, 1200),
])
def test_paced_trials_are_long_against_the_bursts(block: Block, k: int, direction: Direction,
                                                  limit: float, floor: int) -> None:
    assert paced_trials(block, k, direction) == (limit, floor)
    assert paced_trials(block, k, direction, bursts=0)[1] == 0  # --quick: no floor


def test_only_the_full_run_holds_paced_trials_to_several_bursts() -> None:
    assert (E2eConfig.full().paced_trial_bursts, E2eConfig.quick_run().paced_trial_bursts) == (
        4, 0)


def test_the_driver_s_own_posts_keep_to_the_modelled_limits() -> None:
    now = [0.0]
    pacer = PostPacer(channel_per_s=1.0, channel_burst=3, workspace_per_s=10.0,
                      workspace_burst=5, clock=lambda: now[0])
    for _ in range(3):  # a channel's burst
        assert pacer.delay("xoxb-a", "G1") == 0
        pacer.take("xoxb-a", "G1")
    assert pacer.delay("xoxb-a", "G1") == pytest.approx(1.0)  # then 1/s
    for channel in ("G2", "G3"):  # the token's (workspace's) burst of 5 is spent
        pacer.take("xoxb-a", channel)
    assert pacer.delay("xoxb-a", "G4") == pytest.approx(0.1)
    assert pacer.delay("xoxb-b", "G4") == 0  # another app or person: its own budget
    now[0] = 0.1
    assert pacer.delay("xoxb-a", "G4") == pytest.approx(0.0, abs=1e-9)
    assert pacer.delay("xoxb-a", "G1") == pytest.approx(0.9)


async def test_a_paced_post_waits_for_its_turn() -> None:
    pacer = PostPacer(channel_per_s=10.0, channel_burst=1, workspace_per_s=100.0,
                      workspace_burst=10)
    started = trio.current_time()
    for _ in range(3):
        await pacer.wait("xoxp-1", "G1")
    assert trio.current_time() - started == pytest.approx(0.2, abs=0.01)


def test_results_of_an_earlier_schema_still_decode() -> None:
    """Schema 3 only added fields with defaults: the committed results (whichever schema)
    read with today's types."""
    path = Path(__file__).resolve().parents[1] / "bench" / "results" / "e2e.json"
    report = msgspec.json.decode(path.read_bytes(), type=E2eReport)
    assert report.suite == "e2e" and report.schema_version in (2, 3)
    assert all(s.workspaces >= 1 for s in report.results.scenarios)


def test_the_command_line_offers_the_e2e_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "e2e" in capsys.readouterr().out
    assert main(["e2e", "--plot", "e2e.jpg"]) == 2


def test_stanza_ids_are_unique_per_run_and_message() -> None:
    """Interlink drops a repeated stanza id from one sender as a redelivery: a probe and
    the warm-up after it must not share one."""
    from bench._e2e import _stanza_id

    ids = {_stanza_id(message_text(tag, c, n)) for tag in ("r1aa", "r2bb") for c in (0, 1)
           for n in (0, 1)}
    assert len(ids) == 8 and all(" " not in i for i in ids)


async def test_a_closed_loop_whose_messages_never_arrive_still_ends() -> None:
    """Every message lost: the window fills, the sender blocks; the trial still ends."""
    pairs = list(Layout(1).pairs())
    sink = Sink(channels={}, xmpp=True)

    async def black_hole(pair: Pair, text: str, g: int) -> None:
        await trio.lowlevel.checkpoint()

    with trio.fail_after(5):
        trial = await drive(black_hole, pairs, sink, 100, rate=None, lanes=1, window=4,
                            per_conversation=2, drain_timeout=0.05, send_for=0.05)
    assert (trial.integrity.sent, trial.integrity.lost) == (2, 2)


async def test_a_deadline_bounds_the_drain_too() -> None:
    pairs = list(Layout(2).pairs())
    sink = Sink(channels={}, xmpp=True)

    async def black_hole(pair: Pair, text: str, g: int) -> None:
        await trio.lowlevel.checkpoint()

    started = trio.current_time()
    trial = await drive(black_hole, pairs, sink, 2, rate=None, lanes=2, window=4,
                        drain_timeout=30.0, send_for=30.0,
                        deadline=time.perf_counter() + 0.05)
    assert trio.current_time() - started < 5
    assert (trial.integrity.sent, trial.integrity.lost) == (2, 2)
    # a deadline already past when the senders finish: no wait at all, and no error
    trial = await drive(black_hole, pairs, sink, 2, rate=None, lanes=2, window=4,
                        drain_timeout=30.0, send_for=30.0, deadline=time.perf_counter() - 1)
    assert trial.integrity.lost == trial.integrity.sent
