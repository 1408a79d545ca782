"""``interlink run``: build the engine and its supervision tree from a config, run it.

The tree (``interlink tree`` shows it live)::

    interlink                      one_for_one
    ├── storage                    one_for_one
    │   ├── directory-writer       the LMDB writer process's watcher
    │   ├── metadata-store-writer  likewise, for the metadata store
    │   └── metadata-log-writer    batches metadata entries into the store
    ├── sessions                   one_for_one: session-shard-0 … N-1
    ├── contacts                   one_for_one: contact-shard-0 … N-1
    ├── notices                    one_for_one: notice-shard-0 … N-1 (refusal notices)
    ├── housekeeping               prunes the message-id map
    ├── platforms                  local platform servers for demos (the Slack sandbox)
    ├── adapters                   one_for_one: one subtree per adapter connection
    └── control-api                HTTP + JSON on loopback

Session, contact and notice actors are not children of their own: each shard
supervises its activations with a restart budget *per actor* (see
``engine._actors``), so a few failing sessions among 100k cannot exhaust a
shared budget. The router has no task of its own: it runs inline in the
adapters' inbound tasks, which saves a task hop per event.

SIGINT or SIGTERM stops gracefully: the engine refuses new events, drains
every mailbox, flushes; then the tree stops in reverse order and storage
closes.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from engine import (
    METADATA_DBS,
    Address,
    Clock,
    ContactRequest,
    Directory,
    Engine,
    KeyValueStore,
    LmdbDirectory,
    LmdbStore,
    MemoryKV,
    Message,
    MetadataLog,
    SecretBox,
    SystemClock,
    apply_to_directory,
    load_secret_box,
    tune_gc,
)
from engine.testing import LoopbackAdapter, LoopbackAdapterConfig, MemoryDirectory

from ._client import write_control_file
from ._config import Config, build_adapters
from ._control import ControlApp
from ._demo import demo_banner, write_demo_info
from ._metrics import AdapterCollector
from ._platforms import demo_details, sandbox_sayers, service_children
from ._supervisor import ChildSpec, Supervisor

log = logging.getLogger("interlink.run")

METADATA_SCHEMA_VERSION = 1


@asynccontextmanager
async def open_storage(config: Config) -> AsyncIterator[tuple[Directory, KeyValueStore]]:
    """The directory and the metadata store the config asks for; closed on exit."""
    data_dir = config.data_dir()
    directory: Directory
    store: KeyValueStore
    if config.directory.backend == "lmdb":
        directory = await LmdbDirectory.open(
            data_dir / "directory", map_size=config.directory.map_size_mb << 20,
            max_pending=config.directory.max_pending_writes,
            secret_box=secret_box(config, create=True))
    else:
        directory = MemoryDirectory()
    try:
        if config.metadata.backend == "lmdb":
            store = LmdbStore.open(data_dir / "metadata", db_names=METADATA_DBS,
                                   schema_version=METADATA_SCHEMA_VERSION)
        else:
            store = MemoryKV(METADATA_DBS)
        try:
            yield directory, store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await directory.aclose()


def secret_box(config: Config, *, create: bool = False) -> SecretBox:
    """The box for installation credentials at rest, from ``[secrets]``."""
    return load_secret_box(env=config.secrets.key_env, file=config.secrets_key_file(),
                           create=create)


def server_token(config: Config) -> str:
    """The control API's bearer token: from the environment, else the token file.

    Without either, a random token is written to the token file (mode 0600)
    so that the operator commands on this machine can read it.
    """
    from_env = os.environ.get(config.control.token_env, "").strip()
    if from_env:
        return from_env
    path = config.control_token_file()
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    log.info("control token created", extra={"token_file": str(path)})
    return token


class Runtime:
    """A running engine with its supervision tree."""

    def __init__(self, engine: Engine, root: Supervisor, control_url: str | None) -> None:
        self.engine = engine
        self.root = root
        self.control_url = control_url


def build_tree(engine: Engine, directory: Directory, store: KeyValueStore,
               control: ChildSpec | None, platforms: list[ChildSpec] | None = None,
               ) -> Supervisor:
    services = engine.services()

    def specs(group: str) -> list[ChildSpec]:
        return [ChildSpec(id=s.name, start=s.start) for s in services if s.group == group]

    storage_children: list[ChildSpec] = []
    if isinstance(directory, LmdbDirectory):
        storage_children.append(ChildSpec(id="directory-writer", start=directory.store.watch))
    if isinstance(store, LmdbStore):
        storage_children.append(ChildSpec(id="metadata-store-writer", start=store.watch))
    storage_children += specs("storage")
    shard_restarts = {"max_restarts": 10, "max_seconds": 60.0}
    children = [
        _subtree("storage", storage_children),
        _subtree("sessions", specs("session"), **shard_restarts),
        _subtree("contacts", specs("contact"), **shard_restarts),
        _subtree("notices", specs("notice"), **shard_restarts),
        *specs("engine"),
        *([_subtree("platforms", platforms)] if platforms else []),
        _subtree("adapters", [_subtree(s.name, [ChildSpec(id="connection", start=s.start)])
                              for s in services if s.group == "adapters"]),
    ]
    if control is not None:
        children.append(control)
    return Supervisor("interlink", children, strategy="one_for_one")


def _subtree(name: str, children: list[ChildSpec], **options: Any) -> ChildSpec:
    supervisor = Supervisor(name, children, strategy="one_for_one", **options)
    return ChildSpec(id=name, start=supervisor.run, type="supervisor", shutdown=None)


def _control_child(engine: Engine, config: Config, root_holder: list[Supervisor],
                   stopping: trio.Event, bound: list[str]) -> ChildSpec:
    token = server_token(config)
    app = ControlApp(engine, token, lambda: root_holder[0].tree(),
                     sayers=sandbox_sayers(config, list(engine.adapters.values())))
    app.registry.register(AdapterCollector(engine))
    host, port = config.control.host_port()
    hypercorn_config = HypercornConfig()
    hypercorn_config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = logging.getLogger("interlink.control.server")
    hypercorn_config.graceful_timeout = 2.0

    async def serve_control(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                            ) -> None:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(_serve, app, hypercorn_config, stopping)
            bound[:] = addresses
            if addresses:  # where `interlink say`, `tree`... find it (port 0 too)
                write_control_file(config, addresses[0])
            log.info("control API listening", extra={"urls": addresses})
            task_status.started()

    return ChildSpec(id="control-api", start=serve_control, shutdown=3.0)


async def _serve(app: ControlApp, config: HypercornConfig, stopping: trio.Event, *,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    await serve(app, config, shutdown_trigger=stopping.wait,  # type: ignore[arg-type]
                task_status=task_status)


async def _send_seed_events(config: Config, engine: Engine, clock: Clock) -> None:
    for entry in config.adapters:
        adapter = engine.adapters[entry.name]
        if not isinstance(entry, LoopbackAdapterConfig):
            continue
        assert isinstance(adapter, LoopbackAdapter)
        for seed in entry.send_on_start:
            source, destination = Address.parse(seed.source), Address.parse(seed.destination)
            if seed.kind == "contact_request":
                await adapter.send(ContactRequest(source=source, destination=destination,
                                                  timestamp=clock.now()))
            else:
                await adapter.send(Message.create(
                    source=source, destination=destination, body=seed.text,
                    timestamp=clock.now(),
                    platform_ids={adapter.name: f"seed-{seed.source}-{clock.now()}"}))
            await _quiesce(engine)  # seeds are a conversation: each waits for its answers


async def _quiesce(engine: Engine) -> None:
    """Wait until no event is in flight and no loopback echo is pending."""
    loopbacks = [a for a in engine.adapters.values() if isinstance(a, LoopbackAdapter)]
    while True:
        await engine.actors.drain()
        busy = [a for a in loopbacks if a.echo_pending]
        if not busy and not engine.actors.in_flight:
            return
        for adapter in busy:
            await adapter.wait_echo_idle()


@asynccontextmanager
async def _adapters_closed_on_exit(engine: Engine) -> AsyncIterator[None]:
    """Adapters that own connections (HTTP clients) close them however the run ends:
    a graceful stop, an error, or a cancellation of ``run_engine`` itself."""
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            for adapter in engine.adapters.values():
                close = getattr(adapter, "aclose", None)
                if close is not None:
                    await close()


async def run_engine(config: Config, *, clock: Clock | None = None, config_path: str = "",
                     task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the engine described by ``config`` until SIGINT/SIGTERM, then stop gracefully."""
    clock = clock or SystemClock()
    services: dict[str, Any] = {}  # handles of embedded services, filled as they start
    async with open_storage(config) as (directory, store):
        await apply_to_directory(config, directory, now=clock.now())
        metadata_log = MetadataLog(store, directory, clock,
                                   retention_days=config.metadata.retention_days,
                                   rollup_retention_days=config.metadata.rollup_retention_days)
        engine = Engine(directory=directory, metadata_log=metadata_log,
                        adapters=build_adapters(config, services), clock=clock,
                        settings=config.engine_settings())
        stopping = trio.Event()
        root_holder: list[Supervisor] = []
        bound: list[str] = []
        control = _control_child(engine, config, root_holder, stopping, bound) \
            if config.control.enabled else None
        platforms = service_children(config, services)
        root = build_tree(engine, directory, store, control, platforms)
        root_holder.append(root)
        async with _adapters_closed_on_exit(engine), trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await nursery.start(root.run)
                tune_gc()  # start-up objects frozen; fewer young collections while routing
                engine.open_for_events()
                log.info("ready", extra={"data_dir": str(config.data_dir()),
                                         "control": bound})
                await _send_seed_events(config, engine, clock)
                details = demo_details(config, services)
                if details is not None:
                    write_demo_info(config, details)
                    print(demo_banner(details, config_path), flush=True)
                task_status.started(Runtime(engine, root, bound[0] if bound else None))
                async for signum in signals:
                    log.info("signal received", extra={"signal": signal.Signals(signum).name})
                    break
                await engine.stop()
                stopping.set()
                await root.stop()
