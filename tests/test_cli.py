"""The ``interlink`` command: help, version, config errors, and a real run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "loopback.toml"


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
    config.write_text(text.replace('format = "text"', 'format = "json"'))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "supervisor.cli", "run", "--config", str(config)],
        cwd=ROOT, stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    records: list[dict[str, object]] = []
    buffer = b""
    interrupted = False
    with trio.fail_after(60):
        async def lines() -> None:
            nonlocal buffer, interrupted
            while True:
                chunk = await process.stderr.receive_some()  # type: ignore[union-attr]
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    records.append(json.loads(line))
                    if not interrupted and _echo_arrived(records):
                        process.send_signal(signal.SIGINT)  # once: a second one aborts
                        interrupted = True

        await lines()
        code = await process.wait()
    messages = [r["msg"] for r in records]
    assert code == 0, messages
    assert "engine started" in messages and "engine stopped" in messages
    assert "hello from acme" not in json.dumps(records), "logs must not carry content"
    assert any(p.name == "data.mdb" for p in (tmp_path / "data").rglob("*"))


def _echo_arrived(records: list[dict[str, object]]) -> bool:
    return any(r["msg"] == "loopback delivered" and r.get("kind") == "im"
               and r.get("destination") == "alice@acme.localhost" for r in records)
