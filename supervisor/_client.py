"""The operator commands: a small client of the control API.

Where to connect and which token to use come from, in order: ``--url`` /
``--token-file`` / ``$INTERLINK_CONTROL_TOKEN``, then the engine's
configuration file (``--config`` or ``$INTERLINK_CONFIG``), then the defaults
(``http://127.0.0.1:8700`` and ``state/data/control.token``). A config whose
``[control] listen`` has port 0 (a free port) is reached at the address the
running engine wrote to ``control.json`` in its data directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec

from ._config import Config, load_config

DEFAULT_URL = "http://127.0.0.1:8700"
#: written by ``interlink run`` in its data directory: where its control API listens
CONTROL_FILE = "control.json"


class ClientError(Exception):
    """A failure worth one clear line to the operator (exit status 1)."""


def resolve_endpoint(args: argparse.Namespace) -> tuple[str, str]:
    """``(base url, token)`` for the control API."""
    config: Config | None = None
    config_path = args.config or os.environ.get("INTERLINK_CONFIG")
    if config_path:
        config = load_config(config_path)
    url = args.url
    if not url:
        url = control_url(config) if config is not None else DEFAULT_URL
    token_env = config.control.token_env if config is not None else "INTERLINK_CONTROL_TOKEN"
    token = os.environ.get(token_env, "").strip()
    if args.token_file:
        token = _read_token(Path(args.token_file))
    elif not token:
        path = config.control_token_file() if config is not None \
            else Path("state/data/control.token").resolve()
        token = _read_token(path)
    return url.rstrip("/"), token


def control_url(config: Config) -> str:
    """The control API's base URL for ``config``: its ``[control] listen``, or with port 0
    the address the running engine published in ``control.json``."""
    host, port = config.control.host_port()
    if port != 0:
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    path = config.data_dir() / CONTROL_FILE
    try:
        published = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        raise ClientError(f"no running engine found: {path} is missing (the control API "
                          f"listens on a free port; is `interlink run` running with this "
                          f"config?)") from None
    except (OSError, msgspec.DecodeError) as exc:
        raise ClientError(f"cannot read {path}: {exc}") from None
    url = published.get("url") if isinstance(published, dict) else None
    if not isinstance(url, str) or not url.startswith("http"):
        raise ClientError(f"{path} names no control API URL")
    return url


def write_control_file(config: Config, url: str) -> Path:
    """Publish where the control API listens (``interlink run``, after binding)."""
    path = config.data_dir() / CONTROL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(msgspec.json.encode({"url": url}) + b"\n")
    temporary.replace(path)
    return path


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ClientError(
            f"no control token: cannot read {path} ({exc.strerror}); set "
            "INTERLINK_CONTROL_TOKEN, pass --token-file, or --config of the running engine"
        ) from None


def call(url: str, token: str, method: str, path: str, *,
         params: dict[str, str] | None = None, body: object = None) -> Any:
    """One request; translate every failure into a :class:`ClientError`."""
    try:
        response = httpx.request(
            method, f"{url}{path}", params=params,
            content=None if body is None else msgspec.json.encode(body),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            timeout=10.0)
    except httpx.ConnectError:
        raise ClientError(f"no engine is answering at {url}: is `interlink run` running "
                          "(and is --url or the config's [control] listen right)?") from None
    except httpx.HTTPError as exc:
        raise ClientError(f"the control API at {url} did not answer: "
                          f"{type(exc).__name__}") from None
    if response.status_code == 401:
        raise ClientError("the control API refused the token: check INTERLINK_CONTROL_TOKEN, "
                          "--token-file, or the engine's token file")
    try:
        payload = response.json()
    except ValueError:
        raise ClientError(f"unexpected answer from {url} (HTTP {response.status_code})") from None
    if response.status_code >= 400:
        raise ClientError(payload.get("detail") or payload.get("error")
                          or f"HTTP {response.status_code}")
    return payload


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--config", metavar="FILE",
                       help="the running engine's configuration (for its address and token)")
    group.add_argument("--url", help=f"control API base URL (default {DEFAULT_URL})")
    group.add_argument("--token-file", metavar="FILE", help="file holding the bearer token")
    group.add_argument("--json", action="store_true", help="print JSON for scripts")


def _when(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Aligned columns: ``columns`` is ``(header, key)`` pairs."""
    cells = [[h for h, _ in columns]]
    for row in rows:
        cells.append([_cell(key, row.get(key)) for _, key in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _cell(key: str, value: object) -> str:
    if key.endswith("_at") or key == "last_activity":
        return _when(value)
    if value is None or value == "":
        return "-"
    return str(value)


SESSION_COLUMNS = [("SESSION", "id"), ("STATE", "state"), ("A", "a"), ("B", "b"),
                   ("MAILBOX", "mailbox_depth"), ("RESTARTS", "restarts"),
                   ("LAST ERROR", "last_error")]


def run_sessions(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    if args.action == "list":
        params = {k: v for k, v in (("state", args.state), ("domain", args.domain),
                                    ("user", args.user), ("after", args.after),
                                    ("limit", str(args.limit))) if v}
        payload = call(url, token, "GET", "/v1/sessions", params=params)
        if args.json:
            _print_json(payload)
        else:
            print_table(payload["sessions"], SESSION_COLUMNS)
            if payload.get("next"):
                print(f"(more: --after {payload['next']})")
        return 0
    if args.action == "restart" and args.all_failed:
        payload = call(url, token, "POST", "/v1/sessions/restart-failed")
        if args.json:
            _print_json(payload)
        else:
            print(f"restarted {len(payload['restarted'])} failed session(s)")
            for session_id in payload["restarted"]:
                print(f"  {session_id}")
        return 0
    if not args.id:
        raise ClientError(f"sessions {args.action} needs a session ID"
                          + (" or --all-failed" if args.action == "restart" else ""))
    if args.action == "show":
        payload = call(url, token, "GET", f"/v1/sessions/{args.id}")
    else:
        payload = call(url, token, "POST", f"/v1/sessions/{args.id}/{args.action}")
    if args.json:
        _print_json(payload)
    else:
        for key in ("id", "state", "a", "b", "mailbox_depth", "restarts", "handled",
                    "last_error", "last_error_at", "last_activity", "created_at",
                    "conversation_ids"):
            print(f"{key + ':':18} {_cell(key, payload.get(key))}")
    return 0


def run_contacts(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    if args.action == "list":
        params = {k: v for k, v in (("state", args.state), ("after", args.after),
                                    ("limit", str(args.limit))) if v}
        payload = call(url, token, "GET", "/v1/contacts", params=params)
        if args.json:
            _print_json(payload)
        else:
            print_table(payload["contacts"], [("CONTACT", "address"), ("STATE", "state"),
                                              ("MAILBOX", "mailbox_depth"),
                                              ("RESTARTS", "restarts"),
                                              ("LAST ERROR", "last_error")])
        return 0
    if not args.address:
        raise ClientError(f"contacts {args.action} needs an ADDRESS")
    method = "GET" if args.action == "show" else "POST"
    suffix = "" if args.action == "show" else f"/{args.action}"
    payload = call(url, token, method, f"/v1/contacts/{args.address}{suffix}")
    if args.json:
        _print_json(payload)
    else:
        for key, value in payload.items():
            print(f"{key + ':':18} {_cell(key, value)}")
    return 0


def run_tree(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    tree = call(url, token, "GET", "/v1/tree")
    if args.json:
        _print_json(tree)
    else:
        _print_tree(tree, "")
    return 0


def _print_tree(node: dict[str, Any], indent: str) -> None:
    print(f"{indent}{node['name']} ({node.get('strategy', '')})")
    for child in node.get("children", []):
        if "tree" in child:
            _print_tree(child["tree"], indent + "  ")
            continue
        extra = f" restarts={child['restarts']}" if child.get("restarts") else ""
        error = f" last_error={child['last_error']}" if child.get("last_error") else ""
        print(f"{indent}  {child['id']} [{child['state']}]{extra}{error}")


def run_say(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    payload = call(url, token, "POST", "/v1/say",
                   body={"source": args.sender, "destination": args.to, "text": args.text})
    if args.json:
        _print_json(payload)
    else:
        print(_describe_said(payload))
    return 0


def _describe_said(payload: object) -> str:
    if isinstance(payload, dict) and "event_id" in payload:
        return f"sent {payload['event_id']}"
    if isinstance(payload, dict) and payload.get("platform") == "slack":
        return f"posted in Slack conversation {payload.get('channel')} (ts {payload.get('ts')})"
    return "sent"


def _print_json(payload: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(payload)).decode() + "\n")
