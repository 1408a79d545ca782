"""The ``interlink`` command: help, version, config errors, and a real run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "loopback.toml"


@asynccontextmanager
async def engine_process(config: Path, env: dict[str, str]) -> AsyncIterator[trio.Process]:
    """``interlink run`` as a child process, killed if a test leaves it running."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "supervisor.cli", "run", "--config", str(config)],
        cwd=ROOT, stderr=subprocess.PIPE, env=env)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def interlink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_version_and_help() -> None:
    result = interlink("--version")
    assert result.returncode == 0 and result.stdout.startswith("interlink ")
    result = interlink("run", "--help")
    assert result.returncode == 0 and "--config" in result.stdout
    result = interlink()
    assert result.returncode == 2 and "run" in result.stdout


def test_a_bad_config_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[engine]\nshard_count = 'x'\n")
    result = interlink("run", "--config", str(config))
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "$.engine.shard_count" in result.stderr
    assert "Traceback" not in result.stderr
    result = interlink("check-config", "--config", str(EXAMPLE))
    assert result.returncode == 0


async def test_run_routes_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    config = tmp_path / "loopback.toml"
    text = EXAMPLE.read_text().replace('data_dir = "../state/loopback"', 'data_dir = "data"')
    text += f'\n[control]\nlisten = "127.0.0.1:{_free_port()}"\n'
    config.write_text(text.replace('format = "text"', 'format = "json"'))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    async with engine_process(config, env) as process:
        live = LiveEngine(process)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(live.collect)
                await live.wait_for(_echo_arrived)
                process.send_signal(signal.SIGINT)
                code = await process.wait()
    records = live.records
    messages = [r["msg"] for r in records]
    assert code == 0, messages
    assert "engine started" in messages and "engine stopped" in messages
    assert "hello from acme" not in json.dumps(records), "logs must not carry content"
    assert any(p.name == "data.mdb" for p in (tmp_path / "data").rglob("*"))


def _echo_arrived(record: dict[str, object]) -> bool:
    return (record["msg"] == "loopback delivered" and record.get("kind") == "im"
            and record.get("destination") == "alice@acme.localhost")


LIVE_CONFIG = """
[engine]
data_dir = "data"
max_attempts = 2
max_restarts = 1

[logging]
format = "json"

[control]
listen = "127.0.0.1:{port}"

[[adapters]]
type = "loopback"
name = "acme-loop"
known_users = ["alice@acme.localhost"]
send_on_start = [
  {{ source = "alice@acme.localhost", destination = "crash@widget.localhost", text = "boom" }},
]

[[adapters]]
type = "loopback"
name = "widget-loop"
crash_deliveries = {{ "crash@widget.localhost" = 2 }}

[[domains]]
domain = "acme.localhost"
platform = "acme-loop"
internal = true

[[domains]]
domain = "widget.localhost"
platform = "widget-loop"

[[identities]]
address = "alice@acme.localhost"
platform = "acme-loop"
user_id = "alice"

[[agreements]]
domain_a = "acme.localhost"
domain_b = "widget.localhost"
decision = "allow"

[[contacts]]
a = "alice@acme.localhost"
b = "crash@widget.localhost"
"""


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveEngine:
    """An ``interlink run`` process whose JSON log lines are collected as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.records: list[dict[str, object]] = []
        self._changed = trio.Event()

    async def collect(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self.records.append(json.loads(line))
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[dict[str, object]], bool],
                       ) -> dict[str, object]:
        while True:
            for record in self.records:
                if predicate(record):
                    return record
            await self._changed.wait()


async def _cli(*args: str, token: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "INTERLINK_CONTROL_TOKEN": token}
    return await trio.run_process(
        [sys.executable, "-m", "supervisor.cli", *args], cwd=ROOT, env=env,
        capture_stdout=True, capture_stderr=True, check=False)


async def test_an_operator_finds_and_restarts_a_failed_session(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text(LIVE_CONFIG.format(port=_free_port()))
    token = "operator-secret"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "INTERLINK_CONTROL_TOKEN": token}
    cfg = ("--config", str(config))
    async with engine_process(config, env) as process:
        await _operate_failed_session(process, cfg, token)


async def _operate_failed_session(process: trio.Process, cfg: tuple[str, str],
                                  token: str) -> None:
    live = LiveEngine(process)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(live.collect)
            await live.wait_for(lambda r: r["msg"] == "actor failed: restart budget exhausted")

            listing = await _cli("sessions", "list", "--state", "failed", *cfg, token=token)
            out = listing.stdout.decode()
            assert listing.returncode == 0, listing.stderr
            assert "crash@widget.localhost" in out and "InjectedCrash" in out
            session_id = out.splitlines()[1].split()[0]
            assert session_id.startswith("s-")

            shown = await _cli("sessions", "show", session_id, "--json", *cfg, token=token)
            detail = json.loads(shown.stdout)
            assert (detail["state"], detail["last_error"]) == ("failed", "InjectedCrash")
            text = await _cli("sessions", "show", session_id, *cfg, token=token)
            _assert_aligned_record(text.stdout.decode(), session_id)

            # a failed session answers with a failure: say says so, and exits 1
            failing = await _cli("say", "--as", "alice@acme.localhost", "--to",
                                 "crash@widget.localhost", "while failed", *cfg, token=token)
            assert failing.returncode == 1
            assert failing.stderr.decode().startswith(
                "interlink: not delivered (actor-failed): alice@acme.localhost -> "
                "crash@widget.localhost: the conversation has failed or was stopped")
            # a stranger is not a contact: refused, not sent, and the reason named
            stranger = await _cli("say", "--as", "alice@acme.localhost", "--to",
                                  "stranger@widget.localhost", "hi", *cfg, token=token)
            assert stranger.returncode == 1
            assert stranger.stdout == b""
            assert stranger.stderr.decode().count("\n") == 1
            assert stranger.stderr.decode().startswith(
                "interlink: refused (not-a-contact): alice@acme.localhost -> "
                "stranger@widget.localhost: the sender and the recipient are not accepted "
                "contacts")

            refused = await _cli("sessions", "list", *cfg, token="wrong")
            assert refused.returncode == 1
            assert b"refused the token" in refused.stderr
            assert b"Traceback" not in refused.stderr

            tree = await _cli("tree", *cfg, token=token)
            assert b"session-shard-0 [running]" in tree.stdout

            restarted = await _cli("sessions", "restart", session_id, *cfg, token=token)
            assert restarted.returncode == 0, restarted.stderr
            said = await _cli("say", "--as", "alice@acme.localhost", "--to",
                              "crash@widget.localhost", "again", *cfg, token=token)
            assert said.returncode == 0, said.stderr
            assert said.stdout.decode().startswith(
                "delivered: alice@acme.localhost -> crash@widget.localhost (event ")
            await live.wait_for(lambda r: r["msg"] == "loopback delivered"
                                and r.get("kind") == "im"
                                and r.get("destination") == "crash@widget.localhost")
            shown = await _cli("sessions", "show", session_id, "--json", *cfg, token=token)
            assert json.loads(shown.stdout)["state"] == "running"

            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    assert "again" not in json.dumps(live.records)


def _assert_aligned_record(text: str, session_id: str) -> None:
    """``sessions show``: aligned ``key: value`` lines, no Python reprs."""
    lines = text.splitlines()
    keys = [line.split(":", 1)[0] for line in lines]
    assert keys[:4] == ["id", "state", "a", "b"] and "conversation_ids" in keys
    assert lines[0].split() == ["id:", session_id]
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(columns) == 1, text  # every value starts in the same column
    assert not any(c in text for c in "{}[]'"), text


def test_operator_commands_explain_a_missing_engine(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("x")
    result = interlink("sessions", "list", "--url", f"http://127.0.0.1:{_free_port()}",
                       "--token-file", str(token_file))
    assert result.returncode == 1
    assert "no engine is answering" in result.stderr and "Traceback" not in result.stderr
    result = interlink("sessions", "show", "s-0", "--url", "http://127.0.0.1:1",
                       "--token-file", str(tmp_path / "missing"))
    assert result.returncode == 1 and "no control token" in result.stderr


def test_a_start_failure_names_its_cause(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"""
[engine]
data_dir = "{tmp_path}/data"
[control]
listen = "127.0.0.1:{_free_port()}"
[[adapters]]
type = "xmpp"
component_domain = "acme.localhost"
server = "127.0.0.1:{_free_port()}"
secret = {{ env = "INTERLINK_TEST_NO_SUCH_VARIABLE" }}
[[domains]]
domain = "widget.localhost"
platform = "xmpp"
""")
    result = interlink("run", "--config", str(config))
    assert result.returncode == 1
    assert "because: adapter 'xmpp': no component secret (environment variable " \
        "INTERLINK_TEST_NO_SUCH_VARIABLE)" in result.stderr
    assert "Traceback" not in result.stderr
