"""Moved to :mod:`engine.asgi` (kept until every adapter imports it from there)."""

from engine.asgi import Receive as Receive
from engine.asgi import Scope as Scope
from engine.asgi import Send as Send
from engine.asgi import answer_lifespan as answer_lifespan
from engine.asgi import listening_socket as listening_socket
