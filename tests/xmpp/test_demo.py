"""The README's run command brings up the demo, and `interlink demo --script` tours every
feature through it: the end-to-end test of the first federation, as a newcomer runs it."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import trio

from tests.test_cli import ROOT, LiveEngine, _free_port, engine_process

DEMO = ROOT / "examples" / "demo.toml"


def demo_config(tmp_path: Path) -> Path:
    """examples/demo.toml with its own ports and state under ``tmp_path``."""
    sandbox, listen, control = _free_port(), _free_port(), _free_port()
    text = DEMO.read_text()
    text = text.replace("127.0.0.1:3000", f"127.0.0.1:{sandbox}")
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{listen}")
    text = text.replace('"../state/demo', f'"{tmp_path}/state')
    text = text.replace('seed = "sandbox-seed.toml"', f'seed = "{ROOT}/examples/sandbox-seed.toml"')
    text = text.replace('format = "text"', 'format = "json"')
    text += f'\n[control]\nlisten = "127.0.0.1:{control}"\n'
    config = tmp_path / "demo.toml"
    config.write_text(text)
    return config


async def test_the_demo_script_observes_every_feature(tmp_path: Path,
                                                      prosody_installed: None) -> None:
    config = demo_config(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "INTERLINK_CONTROL_TOKEN": "t0ken"}
    async with engine_process(config, env) as process:
        live = LiveEngine(process)
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(live.collect)
                await live.wait_for(lambda r: r["msg"] == "ready")
                tour = await trio.run_process(
                    [sys.executable, "-m", "supervisor.cli", "demo", "--script", "--config",
                     str(config)], cwd=ROOT, env=env, capture_stdout=True,
                    capture_stderr=True, check=False)
                process.send_signal(signal.SIGINT)
                code = await process.wait()
    output = tour.stdout.decode()
    assert tour.returncode == 0, output + tour.stderr.decode()
    assert output.count("✓") == 19, output
    assert code == 0
    logs = json.dumps(live.records)
    assert "Q3 numbers" not in logs and "Thanks" not in logs, "logs must not carry content"
    assert not [r for r in live.records if r.get("level") == "error"]


async def test_the_demo_script_explains_when_no_demo_runs(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    result = await trio.run_process(
        [sys.executable, "-m", "supervisor.cli", "demo", "--script", "--config", str(config)],
        cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b"start it with `make run`" in result.stdout
