"""Supervision and the operator surface: running the engine, the command line."""

from ._runner import open_storage as open_storage
from ._runner import run_engine as run_engine
