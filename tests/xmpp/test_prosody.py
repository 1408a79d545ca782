"""The Prosody launcher: free ports, private config, restart, clean stop, clear errors."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
import trio

from adapters.xmpp._prosody import ProsodyError, ProsodyInstance, ProsodySettings, run_prosody

from ._clients import open_client
from .conftest import (
    COMPONENT,
    HOST,
    PETER,
    PETER_PASSWORD,
    SECRET,
    prosody_settings,
)


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_starts_on_free_ports_with_a_private_config(prosody: ProsodyInstance) -> None:
    assert prosody.running
    assert prosody.c2s_port != prosody.component_port
    assert await _accepts(prosody.c2s_port)
    assert await _accepts(prosody.component_port)
    assert prosody.host == HOST
    assert dict(prosody.components) == {COMPONENT: SECRET}
    assert prosody.muc_domain == f"conference.{HOST}"
    # the config holds the component secret: readable by its owner only
    assert stat.S_IMODE(prosody.config_path.stat().st_mode) == 0o600
    config = prosody.config_path.read_text()
    assert f"c2s_ports = {{ {prosody.c2s_port} }}" in config
    assert ("run_as_root = true" in config) == (os.getuid() == 0)
    assert prosody.cert is not None and prosody.cert[0].exists()
    assert SECRET not in prosody.log_tail(1000)
    assert PETER_PASSWORD not in prosody.log_tail(1000)


async def test_restart_keeps_ports_and_accounts(prosody: ProsodyInstance) -> None:
    ports, pid = (prosody.c2s_port, prosody.component_port), prosody.pid
    with trio.fail_after(15):
        await prosody.restart()
    assert (prosody.c2s_port, prosody.component_port) == ports
    assert prosody.pid != pid
    assert pid is not None and not _alive(pid)
    with trio.fail_after(15):
        async with open_client(PETER, PETER_PASSWORD, "127.0.0.1", prosody.c2s_port) as client:
            assert client.full_jid.startswith(PETER + "/")


@pytest.mark.usefixtures("prosody_installed")
async def test_cancelling_run_prosody_stops_the_server(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            instance: ProsodyInstance = await nursery.start(
                run_prosody, prosody_settings(tmp_path / "prosody"))
            pid = instance.pid
            nursery.cancel_scope.cancel()
    assert pid is not None and not _alive(pid)
    assert not instance.running
    assert not await _accepts(instance.c2s_port)


@pytest.mark.usefixtures("prosody_installed")
async def test_an_unexpected_exit_fails_run_prosody_with_the_log_tail(tmp_path: Path) -> None:
    with trio.fail_after(20), pytest.RaisesGroup(
            pytest.RaisesExc(ProsodyError, match="exited unexpectedly(.|\n)*prosody.log")):
        async with trio.open_nursery() as nursery:
            instance: ProsodyInstance = await nursery.start(
                run_prosody, prosody_settings(tmp_path / "prosody"))
            assert instance.pid is not None
            os.kill(instance.pid, signal.SIGKILL)


async def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    settings = ProsodySettings(state_dir=tmp_path, prosody="interlink-no-such-prosody")
    with trio.fail_after(10), pytest.raises(ProsodyError, match="apt-get install -y prosody"):
        await run_prosody(settings)


async def test_an_early_exit_is_reported_with_its_code(tmp_path: Path) -> None:
    # /bin/false stands in for a Prosody that dies at start (bad config, missing module...)
    settings = ProsodySettings(state_dir=tmp_path, prosody="false", tls=False)
    with trio.fail_after(10), pytest.raises(ProsodyError, match="exited early with code 1"):
        await run_prosody(settings)


def test_settings_refuse_what_would_break_the_lua_config(tmp_path: Path) -> None:
    with pytest.raises(ProsodyError, match="domain"):
        ProsodySettings(state_dir=tmp_path, host='evil"; os.exit()')
    with pytest.raises(ProsodyError, match="localpart"):
        ProsodySettings(state_dir=tmp_path, users={"a b": "pw"})
    with pytest.raises(ProsodyError, match="port"):
        ProsodySettings(state_dir=tmp_path, c2s_port=70000)


async def test_accounts_are_stored_hashed(prosody: ProsodyInstance) -> None:
    """``internal_hashed``: Prosody keeps SCRAM hashes, never a password, in its data."""
    stored = [path for path in (prosody.state_dir / "data").rglob("*") if path.is_file()]
    assert stored, "the account was registered"
    assert [p for p in stored if PETER_PASSWORD.encode() in p.read_bytes()] == []
    with trio.fail_after(15):  # and the password still logs in
        async with open_client(PETER, PETER_PASSWORD, "127.0.0.1", prosody.c2s_port) as client:
            assert client.full_jid.startswith(PETER + "/")
