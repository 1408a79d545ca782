"""``interlink slack-sandbox``: help, clear errors, a real run stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from adapters.slack.sandbox import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sandbox-seed.toml"


def test_help_describes_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: interlink slack-sandbox")
    for option in ("--port", "--seed", "--host", "--no-rate-limits", "--retry-scale",
                   "--channel-rate", "--channel-burst", "--workspace-rate", "--workspace-burst"):
        assert option in out


def test_a_bad_seed_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text(EXAMPLE.read_text().replace('email = "john@acme.localhost"', "email = 42"))
    assert main(["--port", "0", "--seed", str(seed)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"seed error: {seed}: Expected `str`, got `int`" in err
    assert "`$.workspace[0].user[0].email`" in err
    assert main(["--port", "70000", "--seed", str(EXAMPLE)]) == 2
    assert "a port is 0-65535" in capsys.readouterr().err
    assert main(["--port", "0", "--seed", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: no such file" in capsys.readouterr().err


def test_a_port_in_use_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port), "--seed", str(EXAMPLE)]) == 1
    err = capsys.readouterr().err
    assert err == (f"interlink slack-sandbox: cannot listen on 127.0.0.1:{port}: "
                   "address already in use\n")


async def test_serves_the_example_with_the_limits_given_until_sigterm() -> None:
    code = "import sys; from adapters.slack.sandbox import main; sys.exit(main(sys.argv[1:]))"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", code, "--port", "0", "--seed", str(EXAMPLE),
         "--retry-scale", "0.01", "--log-format", "json",
         "--channel-burst", "1", "--channel-rate", "0.01"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    with trio.fail_after(30):
        line = b""
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, "the sandbox exited before listening"
            line += chunk
        assert line.startswith(b"Slack sandbox listening on http://127.0.0.1:")
        url = line.split()[4].decode()
        async with httpx.AsyncClient(trust_env=False) as http:
            answer = await http.post(url + "/api/auth.test",
                                     headers={"Authorization": "Bearer xoxp-john"})
            assert answer.json()["user"] == "john"
            posts = [await http.post(url + "/api/chat.postMessage",
                                     headers={"Authorization": "Bearer xoxp-john"},
                                     json={"channel": "C0GENERAL", "text": "hi"})
                     for _ in range(2)]
            # --channel-burst 1 --channel-rate 0.01: the second post waits 100 s
            assert [p.status_code for p in posts] == [200, 429]
            assert posts[1].headers["Retry-After"] == "100"
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
