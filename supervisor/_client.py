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
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
         params: dict[str, str] | None = None, body: object = None,
         answers: Collection[int] = (), timeout: float = 10.0) -> Any:
    """One request; translate every failure into a :class:`ClientError`. A status in
    ``answers`` is an answer, not a failure: its payload is returned."""
    try:
        response = httpx.request(
            method, f"{url}{path}", params=params,
            content=None if body is None else msgspec.json.encode(body),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            timeout=timeout)
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
    if response.status_code >= 400 and response.status_code not in answers:
        detail = (payload.get("detail") or payload.get("error")) \
            if isinstance(payload, dict) else None
        raise ClientError(detail or f"HTTP {response.status_code}")
    return payload


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--config", metavar="FILE",
                       help="the running engine's configuration (for its address and token)")
    group.add_argument("--url", help=f"control API base URL (default {DEFAULT_URL})")
    group.add_argument("--token-file", metavar="FILE", help="file holding the bearer token")


def add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: ``what`` (e.g. "print the session as JSON") instead of the text for people."""
    parser.add_argument("--json", action="store_true", help=f"{what}, for scripts")


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


def format_record(record: dict[str, Any], keys: Sequence[str]) -> str:
    """One ``key: value`` line per key, in ``keys``' order, values aligned; then any key
    the record has beyond them, sorted. Times as UTC dates, nested maps as ``k=v``
    pairs, nothing as ``-``: the same lines for the same record, whatever its JSON order."""
    ordered = [*keys, *sorted(k for k in record if k not in keys)]
    width = max(len(key) for key in ordered) + 1
    return "\n".join(f"{key + ':':{width}} {_cell(key, record.get(key))}"
                     for key in ordered)


def _cell(key: str, value: object) -> str:
    if key.endswith("_at") or key == "last_activity":
        return _when(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell('', v)}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_cell("", v) for v in value) or "-"
    if value is None or value == "":
        return "-"
    return str(value)


SESSION_COLUMNS = [("SESSION", "id"), ("STATE", "state"), ("A", "a"), ("B", "b"),
                   ("MAILBOX", "mailbox_depth"), ("RESTARTS", "restarts"),
                   ("LAST ERROR", "last_error")]
#: ``sessions show``: its lines, in this order
SESSION_KEYS = ("id", "state", "a", "b", "mailbox_depth", "restarts", "handled",
                "last_error", "last_error_at", "last_activity", "created_at",
                "conversation_ids")
CONTACT_COLUMNS = [("CONTACT", "address"), ("STATE", "state"), ("MAILBOX", "mailbox_depth"),
                   ("RESTARTS", "restarts"), ("LAST ERROR", "last_error")]
#: ``contacts show``: its lines, in this order
CONTACT_KEYS = ("address", "state", "mailbox_depth", "restarts", "handled", "last_error",
                "last_error_at", "last_activity")
#: the control API's limits (``supervisor/_control.py``), checked before asking it
MAX_PAGE = 500
MAX_SAY_WAIT = 60.0


def _list_params(args: argparse.Namespace, *names: str) -> dict[str, str]:
    values = {name: getattr(args, name) for name in (*names, "after")}
    return {**{k: v for k, v in values.items() if v}, "limit": str(args.limit)}


def _print_page(args: argparse.Namespace, payload: dict[str, Any], items: str,
                columns: Sequence[tuple[str, str]]) -> None:
    if args.json:
        _print_json(payload)
        return
    print_table(payload[items], columns)
    if payload.get("next"):
        print(f"(more: --after {payload['next']})")


def _print_record(args: argparse.Namespace, payload: dict[str, Any],
                  keys: Sequence[str]) -> None:
    if args.json:
        _print_json(payload)
    else:
        print(format_record(payload, keys))


def sessions_list(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    payload = call(url, token, "GET", "/v1/sessions",
                   params=_list_params(args, "state", "domain", "user"))
    _print_page(args, payload, "sessions", SESSION_COLUMNS)
    return 0


def sessions_show(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    _print_record(args, call(url, token, "GET", f"/v1/sessions/{_segment(args.id)}"),
                  SESSION_KEYS)
    return 0


def sessions_restart(args: argparse.Namespace) -> int:
    if not args.all_failed:
        return sessions_operate(args, "restart")
    url, token = resolve_endpoint(args)
    payload = call(url, token, "POST", "/v1/sessions/restart-failed")
    if args.json:
        _print_json(payload)
    else:
        print(f"restarted {len(payload['restarted'])} failed session(s)")
        for session_id in payload["restarted"]:
            print(f"  {session_id}")
    return 0


def sessions_operate(args: argparse.Namespace, operation: str = "") -> int:
    """``sessions restart|stop|start ID``: the session as it is afterwards."""
    url, token = resolve_endpoint(args)
    operation = operation or args.operation
    payload = call(url, token, "POST", f"/v1/sessions/{_segment(args.id)}/{operation}")
    _print_record(args, payload, SESSION_KEYS)
    return 0


def contacts_list(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    payload = call(url, token, "GET", "/v1/contacts", params=_list_params(args, "state"))
    _print_page(args, payload, "contacts", CONTACT_COLUMNS)
    return 0


def contacts_show(args: argparse.Namespace) -> int:
    url, token = resolve_endpoint(args)
    _print_record(args, call(url, token, "GET", f"/v1/contacts/{_segment(args.address)}"),
                  CONTACT_KEYS)
    return 0


def contacts_operate(args: argparse.Namespace) -> int:
    """``contacts restart|stop|start ADDRESS``: the contact actor as it is afterwards."""
    url, token = resolve_endpoint(args)
    payload = call(url, token, "POST",
                   f"/v1/contacts/{_segment(args.address)}/{args.operation}")
    _print_record(args, payload, CONTACT_KEYS)
    return 0


def _segment(text: str) -> str:
    """``text`` as one path segment of a URL (an id or an address typed by a person)."""
    return quote(text, safe="@")


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
    """``interlink say``: 0 when delivered (or accepted, still in flight after ``--wait``);
    1 when refused or failed, with the reason on stderr."""
    url, token = resolve_endpoint(args)
    payload = call(url, token, "POST", "/v1/say",
                   body={"source": args.sender, "destination": args.to, "text": args.text,
                         "wait": args.wait},
                   answers=(409, 502), timeout=args.wait + 10.0)
    if not isinstance(payload, dict):
        raise ClientError(f"unexpected answer from {url}: not a JSON object")
    status = payload.get("status")
    if status is None:  # an error without an outcome: e.g. the sender cannot be said as
        raise ClientError(payload.get("detail") or payload.get("error") or "no outcome")
    if args.json:
        _print_json(payload)
    if status in ("delivered", "accepted"):
        if not args.json:
            print(_describe_said(args, payload))
        return 0
    if not args.json:
        reason = payload.get("reason") or "no reason given"
        detail = payload.get("detail") or reason
        verdict = "refused" if status == "refused" else "not delivered"
        print(f"interlink: {verdict} ({reason}): {args.sender} -> {args.to}"
              + ("" if detail == reason else f": {detail}"), file=sys.stderr)
    return 1


def _describe_said(args: argparse.Namespace, payload: dict[str, Any]) -> str:
    where = ""
    if payload.get("platform") == "slack":
        where = f" (Slack conversation {payload.get('channel')}, ts {payload.get('ts')})"
    elif payload.get("event_id"):
        where = f" (event {payload['event_id']})"
    if payload.get("status") == "delivered":
        return f"delivered: {args.sender} -> {args.to}{where}"
    return (f"accepted: {args.sender} -> {args.to}{where}; no outcome yet after "
            f"{args.wait:g} s (still being delivered or retried)")


def _print_json(payload: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(payload)).decode() + "\n")
