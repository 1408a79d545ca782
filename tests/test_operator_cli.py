"""The operator surface as a new user meets it: every command and verb has its own
``--help`` with a line for every option, usage errors are one line, ``sessions show``
reads as aligned lines, and the demo banner's commands run as printed."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor import _client, _control
from supervisor._demo import demo_banner, interlink_command
from supervisor.cli import build_parser, main
from tests.test_cli import ROOT, _free_port

VERBS = ("list", "show", "restart", "stop", "start")


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the command tree with its words (``("sessions", "list")``)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


def _help(*words: str) -> str:
    parser = dict(_commands(build_parser()))[words]
    return parser.format_help()


@pytest.mark.parametrize("noun", ["sessions", "contacts"])
def test_each_verb_has_its_own_help(noun: str) -> None:
    helps = {verb: _help(noun, verb) for verb in VERBS}
    assert len(set(helps.values())) == len(VERBS)  # no two verbs print the same text
    for verb, text in helps.items():
        assert text.startswith(f"usage: interlink {noun} {verb} "), text
        assert "--json" in text and "--config" in text
    assert all(option in helps["list"] for option in ("--state", "--limit", "--after"))
    assert not any("--limit" in helps[verb] for verb in VERBS if verb != "list")
    if noun == "sessions":
        assert "--domain" in helps["list"] and "--user" in helps["list"]
        assert "--all-failed" in helps["restart"]
        assert not any("--all-failed" in helps[verb] for verb in VERBS if verb != "restart")
        assert "ID" in helps["show"] and "--state" not in helps["show"]
    else:
        assert "ADDRESS" in helps["show"]


def test_every_option_of_every_command_has_a_help_line() -> None:
    missing = [(" ".join(words), action.dest)
               for words, parser in _commands(build_parser())
               for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert missing == []
    say = _help("say")
    assert "(loopback)" not in say and "Slack" in say and "--wait" in say


@pytest.mark.parametrize("words", [words for words, _ in _commands(build_parser())])
def test_every_command_has_help(words: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                                ) -> None:
    code: int | str | None
    try:
        code = main([*words, "--help"])  # slack-sandbox and bench: their own parsers
    except SystemExit as exited:
        code = exited.code
    assert code == 0
    assert capsys.readouterr().out.startswith(" ".join(("usage: interlink", *words)))


@pytest.mark.parametrize(("arguments", "expected"), [
    (["sessions", "show"], "interlink sessions show: the following arguments are required: ID"),
    (["sessions", "restart"], "interlink sessions restart: one of the arguments ID "
                              "--all-failed is required"),
    (["sessions", "list", "--limit", "9999"], "interlink sessions list: argument --limit: "
                                              "between 1 and 500, not 9999"),
    (["contacts", "frob"], "interlink contacts: argument VERB: invalid choice: 'frob'"),
    (["say", "--as", "a@b.test", "hi"], "interlink say: the following arguments are "
                                        "required: --to"),
])
def test_a_usage_error_is_one_line(arguments: list[str], expected: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(arguments)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected), err
    assert err.count("\n") == 1 and err.rstrip().endswith("--help`)")


def test_session_show_is_aligned_key_value_lines_in_a_stable_order() -> None:
    record = {"conversation_ids": {"xmpp": "x-1", "slack": "C0X"}, "b": "peter@widget.test",
              "a": "john@acme.test", "id": "s-1", "state": "failed", "restarts": 2,
              "mailbox_depth": 0, "last_error": "InjectedCrash", "handled": 3,
              "last_error_at": 1_767_225_600.0, "last_activity": None,
              "created_at": 1_767_225_000.0, "extra": ""}
    text = _client.format_record(record, _client.SESSION_KEYS)
    assert text.splitlines() == [
        "id:               s-1",
        "state:            failed",
        "a:                john@acme.test",
        "b:                peter@widget.test",
        "mailbox_depth:    0",
        "restarts:         2",
        "handled:          3",
        "last_error:       InjectedCrash",
        "last_error_at:    2026-01-01 00:00:00Z",
        "last_activity:    -",
        "created_at:       2025-12-31 23:50:00Z",
        "conversation_ids: slack=C0X, xmpp=x-1",
        "extra:            -",
    ]
    shuffled = dict(reversed(list(record.items())))
    assert _client.format_record(shuffled, _client.SESSION_KEYS) == text


def test_the_client_checks_the_control_apis_limits() -> None:
    assert _client.MAX_PAGE == _control.MAX_PAGE
    assert _client.MAX_SAY_WAIT == _control.MAX_SAY_WAIT


def _banner_commands(tmp_path: Path) -> list[list[str]]:
    password = tmp_path / "password.peter"
    password.write_text("pw\n")
    details = {
        "slack": {"api_url": "http://127.0.0.1:3000/api/", "sandbox": "http://127.0.0.1:3000",
                  "user": {"address": "john@acme.localhost", "team_id": "T0ACME",
                           "user_id": "U0JOHN"}},
        "xmpp": {"host": "127.0.0.1", "c2s_port": 5222, "domain": "widget.localhost",
                 "user": "peter@widget.localhost", "password_file": str(password)}}
    banner = demo_banner(details, "examples/demo.toml", command=interlink_command(ROOT))
    command = interlink_command(ROOT)
    lines = [line.strip() for line in banner.splitlines()]
    printed = [shlex.split(line) for line in lines if line.startswith(command + " ")]
    assert [words[len(shlex.split(command))] for words in printed] == ["say", "demo"]
    return printed


def _runnable(word: str, cwd: Path) -> bool:
    """Whether a shell in ``cwd`` runs ``word`` (a path with a ``/``, or a PATH lookup)."""
    if "/" not in word:
        return shutil.which(word) is not None
    path = Path(word) if Path(word).is_absolute() else cwd / word
    return path.is_file() and os.access(path, os.X_OK)


def test_the_demo_banner_prints_commands_that_run_as_printed(tmp_path: Path) -> None:
    printed = _banner_commands(tmp_path)
    for words in printed:
        assert _runnable(words[0], ROOT), words
        assert words[words.index("--config") + 1] == "examples/demo.toml"
        assert (ROOT / "examples" / "demo.toml").is_file()
    if sys.executable.startswith(str(ROOT)):  # the checkout's own virtualenv (make run)
        assert printed[0][0] == str(Path(sys.executable).parent.relative_to(ROOT)
                                    / "interlink")
    # The say line, run as printed from the checkout (only the engine's address and
    # token redirected to nowhere): interlink itself answers, no "command not found".
    token = tmp_path / "token"
    token.write_text("x\n")
    say = printed[0]
    result = subprocess.run(
        [*say, "--url", f"http://127.0.0.1:{_free_port()}", "--token-file", str(token)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result
    assert result.stderr.startswith("interlink: no engine is answering at ")
    version = subprocess.run([*say[:say.index("say")], "--version"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    assert version.stdout.startswith("interlink "), version


def test_the_interlink_command_is_a_path_a_shell_runs(tmp_path: Path) -> None:
    inside = interlink_command(ROOT)
    outside = interlink_command(tmp_path)
    for command, cwd in ((inside, ROOT), (outside, tmp_path)):
        assert _runnable(shlex.split(command)[0], cwd), command
    if sys.executable.startswith(str(ROOT)):
        assert not inside.startswith("/") and outside.startswith("/")

