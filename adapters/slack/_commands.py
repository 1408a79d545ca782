"""Slash commands: ``/interlink add|accept|remove|list|help``.

The rules:

- The person is identified by their Slack profile's email, registered as an
  address on first use (:meth:`CommandsPart.ensure_identity`) when its domain
  is routed to this workspace.
- ``add`` / ``accept`` / ``remove`` become contact events, handed to the engine
  without waiting (``port.offer``); the answer is an ephemeral message. Slack
  does not retry commands, so every failure (busy, restarting, not installed,
  not an address) becomes words for the person, never an error.
- ``list`` shows at most 100 contacts and their state.
- ``add`` / ``accept`` of a contact already connected sends nothing to them: it
  makes sure the private conversation is there (checked with Slack, reopened if
  it was deleted, archived, the app removed from it, or Slack forgot it) and
  names it. That is what a person does when the conversation has vanished.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from engine import (
    Address,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryError,
    Event,
    InvalidAddressError,
    MailboxFullError,
    PlatformIdentity,
    UnavailableError,
)

from ._delivery import DeliveryPart
from ._errors import SlackApiError
from ._views import UsersInfo

log = logging.getLogger("interlink.slack")

#: seconds a command may spend reopening a conversation (Slack wants an answer in 3)
_REOPEN_BUDGET = 2.0

HELP = ("*Interlink* connects you with people on other chat platforms.\n"
        "• `/interlink add name@domain` — ask an external contact to connect\n"
        "• `/interlink accept name@domain` — accept a contact's request\n"
        "• `/interlink remove name@domain` — remove a contact\n"
        "• `/interlink list` — your external contacts\n"
        "Each contact gets a private conversation: what you write there goes to them.")


class CommandsPart(DeliveryPart):
    """Answering slash commands."""

    async def on_command(self, form: Mapping[str, str]) -> dict[str, Any]:
        self.stats.commands += 1
        text = " ".join(form.get("text", "").split())
        verb, _, argument = text.partition(" ")
        verb = verb.lower()
        if verb in ("", "help"):
            return _ephemeral(HELP)
        if verb not in ("add", "remove", "accept", "list"):
            return _ephemeral(f"Unknown command `{verb}`.\n{HELP}")
        team_id, user_id = form.get("team_id", ""), form.get("user_id", "")
        try:
            self._installation(team_id)
            me = await self.ensure_identity(team_id, user_id)
        except DeliveryError as exc:
            return _ephemeral(f"Interlink cannot act for you here: {exc.reason}.")
        if verb == "list":
            return _ephemeral(self._contact_list(me))
        if not argument:
            return _ephemeral(f"Usage: `/interlink {verb} name@example.com`")
        try:
            contact = Address.parse(argument.strip("<>").removeprefix("mailto:").split("|")[0])
        except InvalidAddressError as exc:
            return _ephemeral(f"`{argument}` is not an address: {exc}. "
                              "Write it as name@domain, e.g. `peter@widget.com`.")
        if contact == me:
            return _ephemeral("That is your own address.")
        if verb in ("add", "accept"):
            existing = self.port.directory.get_contact(me, contact)
            if existing is not None and existing.state == "accepted":
                return _ephemeral(await self._reopen(me, contact))
        now = self.port.clock.now()
        event: Event = (ContactRequest(source=me, destination=contact, timestamp=now)
                        if verb == "add" else
                        ContactRemove(source=me, destination=contact, timestamp=now)
                        if verb == "remove" else
                        ContactAccept(source=me, destination=contact, timestamp=now))
        try:
            await self.port.offer(event)  # never waits for mailbox room
        except MailboxFullError:
            return _ephemeral("Interlink is busy with your conversations; please try again "
                              "in a moment.")
        except UnavailableError:
            return _ephemeral("Interlink is restarting; please try again in a moment.")
        return _ephemeral({
            "add": f"Asked {contact} to connect. Once they accept, a private conversation "
                   f"with them appears in your sidebar.",
            "remove": f"Removed {contact}.",
            "accept": f"Accepted {contact}; chat with them in your private conversation.",
        }[verb])

    async def _reopen(self, me: Address, contact: Address) -> str:
        """The answer to adding a contact already connected: their conversation, reopened
        if it is gone (within the command's answer budget)."""
        channel = ""
        with trio.move_on_after(_REOPEN_BUDGET):
            try:
                channel = await self.ensure_conversation(me, contact)
            except (DeliveryError, SlackApiError) as exc:
                reason = exc.reason if isinstance(exc, DeliveryError) else exc.error
                return (f"You are already connected with {contact}, but Interlink could not "
                        f"open your conversation with them: {reason}.")
        if not channel:
            return (f"You are already connected with {contact}; your private conversation "
                    f"with them is being opened, try again in a moment.")
        return f"You are already connected with {contact}: chat with them in <#{channel}>."

    def _contact_list(self, me: Address) -> str:
        contacts = [c for c in self.port.directory.list_contacts(me) if c.state != "removed"]
        if not contacts:
            return "You have no external contacts yet. Add one with `/interlink add name@domain`."
        lines = []
        for record in contacts[:100]:
            if record.state == "accepted":
                state = "connected"
            else:
                state = "waiting for them" if record.requested_by == me else \
                    f"waiting for you (`/interlink accept {record.contact}`)"
            lines.append(f"• {record.contact} — {state}")
        more = len(contacts) - 100
        return "Your external contacts:\n" + "\n".join(lines) + (
            f"\n…and {more} more" if more > 0 else "")

    async def ensure_identity(self, team_id: str, user_id: str) -> Address:
        """The address of a Slack user, registered from their profile email on first use."""
        directory = self.port.directory
        known = directory.find_address(self.name, team_id, user_id)
        if known is not None:
            return known
        token = self._bot_token(team_id)
        try:
            answer = await self.web.call("users.info", token=token, team_id=team_id,
                                         args={"user": user_id}, into=UsersInfo)
        except SlackApiError as exc:
            raise DeliveryError(f"users.info:{exc.error}") from None
        profile = answer.user.profile if answer.user is not None else None
        email = profile.email if profile is not None else ""
        try:
            address = Address.parse(email)
        except InvalidAddressError:
            raise DeliveryError("your Slack profile has no usable email address") from None
        route = directory.get_domain_route(address.domain)
        if route is None or route.platform != self.name or route.tenant not in ("", team_id):
            raise DeliveryError(f"the domain {address.domain} is not set up for federation "
                                f"from this workspace")
        identity = PlatformIdentity(address=address, platform=self.name, tenant=team_id,
                                    user_id=user_id)
        await directory.put_identity(identity)
        log.info("slack user registered", extra={"team_id": team_id, "user_id": user_id})
        self._follow(identity)
        return address


def _ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}
