"""The one check every Prosody-backed test makes before starting a server."""

from __future__ import annotations

import os
import shutil

import pytest

from adapters.xmpp._prosody import INSTALL_HINT


def require_prosody() -> None:
    """Skip (locally) or fail (CI) when the prosody binary is missing."""
    if shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None:
        return
    message = f"prosody is not installed; {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)
