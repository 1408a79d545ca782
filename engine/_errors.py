"""Interlink's exception tree, split by who is at fault.

    InterlinkError
    ├── LocalError            -- a bug or misuse inside this process
    │   ├── ConfigError       -- a configuration file or value is wrong
    │   └── ActorStoppedError -- an actor ref whose host has shut down
    ├── RemoteError           -- a peer (platform, client) misbehaved or sent bad input
    │   └── InvalidAddressError
    ├── PolicyRefusal         -- federation policy said no
    └── UnavailableError      -- something is temporarily or permanently unreachable
        ├── MailboxFullError  -- tell_nowait on a full mailbox
        ├── AskTimeoutError   -- ask() got no reply in time
        └── DirectoryError    -- the directory could not answer or store

Every error has a ``retryable`` hint; dependency exceptions are translated into
this tree at the boundary that calls the dependency.
"""

from __future__ import annotations


class InterlinkError(Exception):
    """Root of every error Interlink raises on purpose."""

    retryable: bool = False


class LocalError(InterlinkError):
    """A bug or misuse inside this process."""


class ConfigError(LocalError):
    """A configuration file or value is wrong; the message names where and why."""


class ActorStoppedError(LocalError):
    """The actor host behind a ref has stopped; nothing can be delivered through it."""


class RemoteError(InterlinkError):
    """A remote peer misbehaved or sent input we cannot accept."""


class InvalidAddressError(RemoteError, ValueError):
    """A federated address is not of the form ``user@domain``."""


class PolicyRefusal(InterlinkError):
    """Federation policy refused an operation; ``reason`` says which rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnavailableError(InterlinkError):
    """Something we need cannot be reached; ``retryable`` says whether to try again."""

    retryable = True


class MailboxFullError(UnavailableError):
    """``tell_nowait`` found the actor's mailbox full."""


class AskTimeoutError(UnavailableError):
    """``ask`` received no reply within its timeout."""


class DirectoryError(UnavailableError):
    """The directory failed to read or write."""
