"""A Prosody launcher for tests and the demo: own config, data and ports under one directory.

Rules of this module:

- Everything Prosody needs lives under ``ProsodySettings.state_dir``: the
  generated ``prosody.cfg.lua`` (rewritten at every start, mode 0600 because it
  holds component secrets), ``data/`` (accounts, rosters), ``certs/`` (a
  self-signed certificate made with ``openssl`` when it is installed, so TLS
  clients work too), ``prosody.log`` (Prosody's own log at ``info``: routing
  facts, no message content) and ``prosody.console.log`` (its stdout/stderr).
- Ports given as ``0`` are picked free on 127.0.0.1 once, when the instance is
  created, and kept across :meth:`ProsodyInstance.restart` so that clients and
  components reconnect to the same place. If the first start finds a picked
  port taken in the meantime, new ports are picked (at most three tries).
- :func:`run_prosody` registers the users with ``prosodyctl``, starts
  ``prosody -F`` (foreground, no daemon), waits until the c2s port (and the
  component port, when components are configured) accept connections, then
  reports a :class:`ProsodyInstance` through
  ``task_status.started``. It fails with :class:`ProsodyError` when the binary
  is missing, when Prosody exits on its own (the error carries the tail of its
  logs), or when it is not listening within ``start_timeout``.
- Stopping sends SIGTERM (Prosody closes its streams gracefully), waits at most
  ``stop_timeout`` seconds, then kills. Cancelling :func:`run_prosody` stops
  Prosody that way, shielded, so a test never leaks a server.
- ``run_as_root`` is written only when the launcher itself runs as root (as CI
  does); Prosody refuses to start as root otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import trio

from engine import LocalError

log = logging.getLogger("interlink.xmpp.prosody")

INSTALL_HINT = "install it with: apt-get install -y prosody"

#: Prosody modules the fixture and the demo load (facts: ../shared/reference/xmpp.md)
MODULES: tuple[str, ...] = (
    "tls", "roster", "saslauth", "disco", "ping", "vcard4", "vcard_legacy", "pep",
    "carbons", "smacks",
)

_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
_USER = re.compile(r"^[a-z0-9._-]{1,64}$")
_PORT_IN_USE = "Failed to open server port"
_POLL = 0.05  # seconds between two probes of the listening ports while starting


class ProsodyError(LocalError):
    """Prosody could not be started, stopped or configured; the message says why."""


@dataclass(frozen=True, slots=True)
class ProsodySettings:
    """What one Prosody instance serves. Ports ``0`` mean "pick free ones"."""

    state_dir: Path
    host: str = "widget.localhost"
    #: component domain -> shared secret (XEP-0114)
    components: Mapping[str, str] = field(default_factory=dict)
    #: localpart -> password, registered on ``host`` before each start
    users: Mapping[str, str] = field(default_factory=dict)
    #: host a MUC service at ``conference.<host>``
    muc: bool = True
    c2s_port: int = 0
    component_port: int = 0
    #: make a self-signed certificate for ``host`` (needs ``openssl``) so STARTTLS is offered
    tls: bool = True
    prosody: str = "prosody"
    prosodyctl: str = "prosodyctl"
    start_timeout: float = 20.0
    stop_timeout: float = 5.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        for domain in (self.host, *self.components):
            if not _DOMAIN.match(domain):
                raise ProsodyError(f"not a plain lower-case domain: {domain!r}")
        for user in self.users:
            if not _USER.match(user):
                raise ProsodyError(f"not a simple localpart: {user!r}")
        for port in (self.c2s_port, self.component_port):
            if not 0 <= port < 65536:
                raise ProsodyError(f"port out of range: {port}")
        if self.log_level not in ("debug", "info", "warn", "error"):
            raise ProsodyError(f"unknown Prosody log level {self.log_level!r}")
        if self.start_timeout <= 0 or self.stop_timeout <= 0:
            raise ProsodyError("start_timeout and stop_timeout must be positive")

    @property
    def muc_domain(self) -> str | None:
        return f"conference.{self.host}" if self.muc else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _lua(value: str) -> str:
    """A Lua string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_config(settings: ProsodySettings, *, c2s_port: int, component_port: int,
                  cert: tuple[Path, Path] | None) -> str:
    """The ``prosody.cfg.lua`` text for ``settings`` on the given ports."""
    state = settings.state_dir.resolve()
    lines = [
        "-- Generated by Interlink at every start; edits are overwritten.",
        f"pidfile = {_lua(str(state / 'prosody.pid'))}",
        f"data_path = {_lua(str(state / 'data'))}",
        f"certificates = {_lua(str(state / 'certs'))}",
    ]
    if os.getuid() == 0:
        lines.append("run_as_root = true")
    lines += [
        "log = { { levels = { min = " + _lua(settings.log_level) + " }, to = \"file\", "
        f"filename = {_lua(str(state / 'prosody.log'))} }} }}",
        "modules_enabled = { " + "; ".join(_lua(m) for m in MODULES) + " }",
        'modules_disabled = { "s2s" }',
        'interfaces = { "127.0.0.1" }',
        f"c2s_ports = {{ {c2s_port} }}",
        f"component_ports = {{ {component_port} }}",
        'component_interfaces = { "127.0.0.1" }',
        "http_ports = {}",
        "https_ports = {}",
        'authentication = "internal_hashed"',  # SCRAM hashes on disk, never passwords
        "c2s_require_encryption = false",
        "allow_unencrypted_plain_auth = true",
        "",
        f"VirtualHost {_lua(settings.host)}",
    ]
    if cert is not None:
        certificate, key = (_lua(str(path)) for path in cert)
        lines.append(f"    ssl = {{ certificate = {certificate}; key = {key} }}")
    if settings.muc_domain is not None:
        lines.append(f"Component {_lua(settings.muc_domain)} \"muc\"")
    for domain, secret in settings.components.items():
        lines.append(f"Component {_lua(domain)}")
        lines.append(f"    component_secret = {_lua(secret)}")
    return "\n".join(lines) + "\n"


class ProsodyInstance:
    """One Prosody server under a state directory: its ports, domains and process.

    Created by :func:`run_prosody`; :meth:`stop`, :meth:`start` and
    :meth:`restart` control the process while ``run_prosody`` watches it.
    """

    def __init__(self, settings: ProsodySettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.config_path = self.state_dir / "prosody.cfg.lua"
        self.log_path = self.state_dir / "prosody.log"
        self.console_path = self.state_dir / "prosody.console.log"
        self.host = settings.host
        self.components: Mapping[str, str] = dict(settings.components)
        self.muc_domain = settings.muc_domain
        self.users: Mapping[str, str] = dict(settings.users)
        self._auto_ports = settings.c2s_port == 0 or settings.component_port == 0
        self.c2s_port, self.component_port = self._pick_ports()
        self.cert: tuple[Path, Path] | None = None
        self._process: trio.Process | None = None
        self._console: IO[bytes] | None = None
        self._stopping = False
        self._registered = False
        self._lock = trio.Lock()
        self._changed = trio.lowlevel.ParkingLot()
        self.starts = 0

    def _pick_ports(self) -> tuple[int, int]:
        picked = iter(free_ports(2))
        c2s = self.settings.c2s_port or next(picked)
        component = self.settings.component_port or next(picked)
        return c2s, component

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of Prosody's log and console output (no message content)."""
        parts: list[str] = []
        for path in (self.console_path, self.log_path):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            tail = text.splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts) or "(Prosody wrote no log)"

    async def start(self) -> None:
        """Write the config and start Prosody; returns once both ports accept connections."""
        async with self._lock:
            if self.running:
                return
            await self._prepare()
            tries = 3 if self._auto_ports and self.starts == 0 else 1
            for attempt in range(tries):
                try:
                    await self._spawn_and_wait()
                except _PortInUse:
                    await self._terminate()
                    if attempt == tries - 1:
                        raise ProsodyError(
                            f"Prosody could not listen on ports {self.c2s_port}/"
                            f"{self.component_port}\n{self.log_tail()}") from None
                    self.c2s_port, self.component_port = self._pick_ports()
                    continue
                break
            self.starts += 1
            log.info("prosody started", extra={
                "pid": self.pid, "c2s_port": self.c2s_port,
                "component_port": self.component_port, "host": self.host})
            self._changed.unpark_all()

    async def stop(self) -> None:
        """SIGTERM, then kill after ``stop_timeout``; a no-op when not running."""
        async with self._lock:
            await self._terminate()

    async def restart(self) -> None:
        """Stop, then start again on the same ports with the same data."""
        await self.stop()
        await self.start()

    # -- internals -------------------------------------------------------------

    async def _prepare(self) -> None:
        prosody = shutil.which(self.settings.prosody)
        if prosody is None:
            raise ProsodyError(f"the prosody binary ({self.settings.prosody!r}) was not found; "
                               + INSTALL_HINT)
        for sub in ("data", "certs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.settings.tls and self.cert is None:
            self.cert = await self._certificate()
        self._write_config()
        if not self._registered:
            await self._register_users()
            self._registered = True

    def _write_config(self) -> None:
        text = render_config(self.settings, c2s_port=self.c2s_port,
                             component_port=self.component_port, cert=self.cert)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)

    async def _certificate(self) -> tuple[Path, Path] | None:
        certs = self.state_dir / "certs"
        crt, key = certs / f"{self.host}.crt", certs / f"{self.host}.key"
        if crt.exists() and key.exists():
            return crt, key
        if shutil.which("openssl") is None:
            log.warning("openssl not found: Prosody runs without TLS", extra={"host": self.host})
            return None
        command = [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "3650", "-subj", f"/CN={self.host}",
            "-addext", f"subjectAltName=DNS:{self.host},DNS:*.{self.host}",
            "-keyout", str(key), "-out", str(crt),
        ]
        with trio.fail_after(self.settings.start_timeout):
            result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                            check=False)
        if result.returncode != 0:
            raise ProsodyError("openssl could not make a certificate: "
                               + result.stderr.decode(errors="replace")[-500:])
        key.chmod(0o600)
        return crt, key

    async def _register_users(self) -> None:
        ctl = shutil.which(self.settings.prosodyctl)
        if ctl is None and self.users:
            raise ProsodyError(f"{self.settings.prosodyctl!r} was not found; " + INSTALL_HINT)
        for user, password in self.users.items():
            command = [str(ctl), "--config", str(self.config_path), "register", user,
                       self.host, password]
            with trio.fail_after(self.settings.start_timeout):
                result = await trio.run_process(command, capture_stdout=True,
                                                capture_stderr=True, check=False)
            if result.returncode != 0:
                # the output names the user and the reason, never the password
                output = (result.stdout + result.stderr).decode(errors="replace")
                output = output.replace(password, "***")[-500:]
                raise ProsodyError(f"prosodyctl could not register {user}@{self.host}: {output}")

    async def _spawn_and_wait(self) -> None:
        command = [str(shutil.which(self.settings.prosody)), "--config", str(self.config_path),
                   "-F"]
        self._open_console()
        try:
            # A session of its own: Ctrl-C in a terminal signals the whole foreground
            # group, and Prosody must outlive the engine's graceful drain; we stop it.
            self._process = await trio.lowlevel.open_process(
                command, stdin=subprocess.DEVNULL, stdout=self._console,
                stderr=subprocess.STDOUT, cwd=str(self.state_dir), start_new_session=True)
        except OSError as exc:
            self._close_console()
            raise ProsodyError(f"could not start prosody: {exc}; " + INSTALL_HINT) from exc
        log_start = self._log_size()
        try:
            with trio.fail_after(self.settings.start_timeout):
                await self._wait_listening(log_start)
        except trio.TooSlowError:
            await self._terminate()
            raise ProsodyError(
                f"Prosody did not listen on 127.0.0.1:{self.c2s_port} and "
                f":{self.component_port} within {self.settings.start_timeout} s\n"
                + self.log_tail()) from None
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._terminate()
            raise

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    async def _wait_listening(self, log_start: int) -> None:
        process = self._process
        assert process is not None
        # Prosody opens the component port only when a component is configured
        pending = [self.c2s_port] + ([self.component_port] if self.components else [])
        while pending:
            if process.returncode is not None:
                tail = self.log_tail()
                self._process = None
                self._close_console()
                raise ProsodyError(f"Prosody exited early with code {process.returncode}\n{tail}")
            if self._port_in_use_logged(log_start):
                raise _PortInUse()
            port = pending[0]
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(_POLL)
                continue
            await stream.aclose()
            pending.pop(0)

    def _port_in_use_logged(self, log_start: int) -> bool:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(log_start)
                return _PORT_IN_USE.encode() in fh.read()
        except FileNotFoundError:
            return False

    async def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        self._stopping = True
        try:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    with trio.move_on_after(self.settings.stop_timeout):
                        await process.wait()
                    if process.returncode is None:
                        log.warning("prosody did not stop in time: killed",
                                    extra={"pid": process.pid})
                        process.kill()
                        await process.wait()
                log.info("prosody stopped", extra={"pid": process.pid,
                                                   "returncode": process.returncode})
        finally:
            self._process = None
            self._stopping = False
            self._close_console()
            self._changed.unpark_all()

    def _open_console(self) -> None:
        self._console = open(self.console_path, "ab")  # noqa: SIM115 -- closed in _terminate

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    async def _watch(self) -> None:
        """Return never; raise :class:`ProsodyError` if Prosody exits without being asked to."""
        while True:
            process = self._process
            if process is None:
                await self._changed.park()
                continue
            await process.wait()
            if self._process is process and not self._stopping:
                tail = self.log_tail()
                self._process = None
                self._close_console()
                raise ProsodyError(
                    f"Prosody exited unexpectedly with code {process.returncode}\n{tail}")
            while self._process is process:
                await self._changed.park()


class _PortInUse(Exception):
    """Prosody logged that it could not bind a port."""


async def run_prosody(settings: ProsodySettings, *,
                      task_status: trio.TaskStatus[ProsodyInstance] = trio.TASK_STATUS_IGNORED,
                      ) -> None:
    """Run Prosody until cancelled; report the :class:`ProsodyInstance` once it listens."""
    instance = ProsodyInstance(settings)
    try:
        await instance.start()
        task_status.started(instance)
        await instance._watch()
    finally:
        with trio.CancelScope(shield=True):
            await instance.stop()
