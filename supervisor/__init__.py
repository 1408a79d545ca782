"""Supervision and the operator surface: running the engine, the command line."""

from ._config import ADAPTER_SPECS as ADAPTER_SPECS
from ._config import SERVICE_SPECS as SERVICE_SPECS
from ._config import Config as Config
from ._config import build_adapters as build_adapters
from ._config import load_config as load_config
from ._runner import open_storage as open_storage
from ._runner import run_engine as run_engine
