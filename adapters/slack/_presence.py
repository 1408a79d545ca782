"""Slack users' presence and profiles, for their contacts on other platforms.

Slack has no presence events for apps, so presence is polled. The rules:

- A Slack user is *followed* once they federate (they send or receive an
  event, or run a command). Following is bounded (``max_followed_users``,
  least recently seen dropped first); the presence last told for a user is
  kept with them in :class:`FollowedUsers`, so it goes when they do.
- Every ``presence_interval`` seconds, each followed user with an accepted
  contact is asked for (``users.getPresence``); a change is submitted as a
  :class:`engine.Presence` broadcast (``active`` -> available, else away). A
  broadcast the engine did not take is told again on the next poll.
- A newly followed user's profile (``users.info``) is read once and broadcast
  (name, email, title, avatar); requests are queued (bounded: a request that
  does not fit is skipped and asked again at a later sighting). A profile that
  could not be read unfollows the user, so the next sighting asks again.
"""
from __future__ import annotations

import logging

import trio

from engine import (
    Address,
    Availability,
    Bounded,
    DeliveryError,
    PlatformIdentity,
    Presence,
    UnavailableError,
)

from ._errors import SlackApiError
from ._installations import InstallationsPart
from ._translate import profile_event
from ._views import SlackUser, UsersInfo, UsersPresence

log = logging.getLogger("interlink.slack")


class FollowedUsers:
    """Slack users whose presence is polled, each with the state last told to contacts.

    Bounded, least recently seen dropped first; a dropped user's presence state
    goes with them (one map, so the two can never drift apart).
    """

    def __init__(self, limit: int) -> None:
        self._users: Bounded = Bounded(limit)  # address -> [identity, told state or None]

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, address: object) -> bool:
        return address in self._users

    def follow(self, identity: PlatformIdentity) -> bool:
        """Follow (or refresh) ``identity``; True when it was not followed before."""
        entry = self._users.get(identity.address)
        self._users.remember(identity.address, [identity, None if entry is None else entry[1]])
        return entry is None

    def forget(self, address: Address) -> None:
        self._users.pop(address, None)

    def snapshot(self) -> list[tuple[Address, PlatformIdentity]]:
        return [(address, entry[0]) for address, entry in self._users.items()]

    def told(self, address: Address) -> Availability | None:
        """The presence last told for ``address`` (``None``: none, or not followed)."""
        entry = self._users.get(address)
        return None if entry is None else entry[1]

    def tell(self, address: Address, state: Availability) -> bool:
        """Record ``state`` for a followed user; False when it is what was told already
        (or the user is no longer followed: nothing to tell)."""
        entry = self._users.get(address)
        if entry is None or entry[1] == state:
            return False
        entry[1] = state
        return True

    def untell(self, address: Address) -> None:
        """The last state did not reach the engine: tell it again on the next poll."""
        entry = self._users.get(address)
        if entry is not None:
            entry[1] = None


class PresencePart(InstallationsPart):
    """Following Slack users: presence polls and profile broadcasts."""

    _followed: FollowedUsers
    _profile_requests: trio.MemorySendChannel[PlatformIdentity]
    _profile_requests_out: trio.MemoryReceiveChannel[PlatformIdentity]

    def _follow(self, identity: PlatformIdentity) -> None:
        """Follow a Slack user who federates: presence polls, and their profile once."""
        if self._followed.follow(identity):
            try:
                self._profile_requests.send_nowait(identity)
            except trio.WouldBlock:
                self.stats.profiles_skipped += 1  # bounded: a later sighting asks again

    async def _publish_profiles(self) -> None:
        """Read followed users' profiles (users.info) and broadcast them to their contacts."""
        async for identity in self._profile_requests_out:
            try:
                answer = await self.web.call("users.info", token=self._bot_token(identity.tenant),
                                             team_id=identity.tenant,
                                             args={"user": identity.user_id}, into=UsersInfo)
                await self.port.submit(profile_event(identity.address,
                                                     answer.user or SlackUser(),
                                                     timestamp=self.port.clock.now()))
            except (DeliveryError, SlackApiError, UnavailableError) as exc:
                self._followed.forget(identity.address)  # ask again next time
                log.info("slack profile not read", extra={
                    "team_id": identity.tenant, "user_id": identity.user_id,
                    "error": type(exc).__name__})

    async def _poll_presence(self) -> None:
        """Slack has no presence events for apps: poll the users who federate."""
        while True:
            await trio.sleep(self.settings.presence_interval)
            for address, identity in self._followed.snapshot():
                if not any(c.state == "accepted"
                           for c in self.port.directory.list_contacts(address)):
                    continue
                try:
                    token = self._bot_token(identity.tenant)
                    answer = await self.web.call("users.getPresence", token=token,
                                                 team_id=identity.tenant,
                                                 args={"user": identity.user_id},
                                                 into=UsersPresence)
                except (DeliveryError, SlackApiError):
                    continue
                state: Availability = "available" if answer.presence == "active" else "away"
                if not self._followed.tell(address, state):
                    continue
                self.stats.presence_changes += 1
                try:
                    await self.port.submit(Presence(
                        source=address, destination=address, availability=state,
                        timestamp=self.port.clock.now()))
                except UnavailableError:
                    self._followed.untell(address)  # not told: tell again next poll
