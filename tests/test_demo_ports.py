"""Two demos side by side: examples/demo.toml with port 0 (a free port) for the sandbox,
the Slack adapter's listener and the control API, and state of their own, run through
``run_engine`` in one process; each carries a message each way, and the operator
commands find each one's control API from its config."""

from __future__ import annotations

import argparse
import functools
import io
import os
import shlex
import shutil
from pathlib import Path

import httpx
import pytest
import trio

from adapters.xmpp import open_client
from supervisor._client import call, control_url, resolve_endpoint
from supervisor._config import Config, load_config
from supervisor._demo import STEP_TIMEOUT, Tour, read_demo_info
from supervisor._runner import Runtime, run_engine
from tests._prosody import require_prosody
from tests.test_cli import ROOT

DEMO = ROOT / "examples" / "demo.toml"


@pytest.fixture
def prosody_available() -> None:
    require_prosody()


def free_port_demo(directory: Path) -> Path:
    """examples/demo.toml with every port 0 and its state under ``directory``."""
    text = DEMO.read_text()
    for fixed in ("127.0.0.1:3000", "127.0.0.1:8080"):
        assert fixed in text
        text = text.replace(fixed, "127.0.0.1:0")
    text = text.replace('public_url = "http://127.0.0.1:0"\n', "")  # follows the free port
    text = text.replace('"../state/demo', f'"{directory}/state')
    text = text.replace('seed = "sandbox-seed.toml"', f'seed = "{ROOT}/examples/sandbox-seed.toml"')
    text += '\n[control]\nlisten = "127.0.0.1:0"\n'
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "demo.toml"
    config.write_text(text)
    return config


async def a_message_each_way(config: Config) -> None:
    """The demo tour's first steps: John adds Peter, Peter accepts, each writes once."""
    info = read_demo_info(config)
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http, \
            open_client(info.peter, info.peter_password, info.xmpp_host,
                        info.xmpp_port) as peter:
        tour = Tour(info, http, peter, io.StringIO())
        for _, step in tour.steps()[:4]:
            with trio.fail_after(STEP_TIMEOUT):
                await step()


async def test_two_demos_run_side_by_side_on_free_ports(
        tmp_path: Path, prosody_available: None, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [free_port_demo(tmp_path / name) for name in ("one", "two")]
    configs = [load_config(path) for path in paths]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            runtimes: list[Runtime] = [
                await nursery.start(functools.partial(run_engine, config,
                                                      config_path=str(path)))
                for config, path in zip(configs, paths, strict=True)]
            infos = [read_demo_info(config) for config in configs]
            _assert_banner_commands_run_as_printed(capsys.readouterr().out, paths)
            assert len({info.slack_api for info in infos}) == 2
            assert all(":0/" not in info.slack_api for info in infos)
            urls = [control_url(config) for config in configs]
            assert urls == [runtime.control_url for runtime in runtimes]
            assert len(set(urls)) == 2 and all(not url.endswith(":0") for url in urls)
            for path, url in zip(paths, urls, strict=True):
                # what `interlink tree --config <path>` does: the address from control.json
                args = _endpoint_args(path)
                found, token = resolve_endpoint(args)
                assert found == url
                tree = await trio.to_thread.run_sync(call, found, token, "GET", "/v1/tree")
                assert tree["name"] == "interlink"
            async with trio.open_nursery() as tours:
                for config in configs:
                    tours.start_soon(a_message_each_way, config)
            nursery.cancel_scope.cancel()


def _endpoint_args(path: Path) -> argparse.Namespace:
    return argparse.Namespace(config=str(path), url=None, token_file=None)


def _assert_banner_commands_run_as_printed(out: str, configs: list[Path]) -> None:
    """Each demo's banner: its `say` and `demo --script` lines start with an executable
    a shell finds from here (the checkout's .venv/bin/interlink is not on the PATH) and
    name the demo's own config."""
    lines = [shlex.split(line) for line in out.splitlines()
             if " say --as " in line or line.rstrip().endswith(" demo --script")
             or " demo --script --config " in line]
    assert len(lines) == 2 * len(configs), out
    for words in lines:
        program = words[0]
        path = Path(program) if "/" in program else Path(shutil.which(program) or "-")
        assert path.is_file() and os.access(path, os.X_OK), words
        assert words[words.index("--config") + 1] in {str(config) for config in configs}
