"""Federation policy: may these two addresses talk, and why (or why not)?

Rules, in order (the first that applies decides):

1. A user with a ``deny`` user policy can neither send nor receive.
2. Two addresses of the same domain, or of two *internal* domains, are
   allowed (the organisation talking to itself).
3. The domain pair's agreement decides: ``deny`` refuses; no agreement
   refuses ("unknown external domains are denied by default").
4. An ``allow`` agreement with ``opt_in_required`` additionally needs every
   internal party to have opted in (user policy ``opted_in`` or ``allow``).

Every decision carries a short machine-readable reason that the metadata log
records.
"""

from __future__ import annotations

import msgspec

from ._address import Address
from ._directory import Directory


class PolicyDecision(msgspec.Struct, frozen=True):
    allowed: bool
    reason: str


_SAME_DOMAIN = PolicyDecision(True, "same-domain")
_INTERNAL = PolicyDecision(True, "internal-domains")
_AGREEMENT = PolicyDecision(True, "agreement-allows")
_NO_AGREEMENT = PolicyDecision(False, "no-agreement")
_AGREEMENT_DENIES = PolicyDecision(False, "agreement-denies")


class FederationPolicy:
    """Evaluates the rules above against the directory (read inline, no I/O)."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def check(self, source: Address, destination: Address) -> PolicyDecision:
        directory = self._directory
        for party in (source, destination):
            rule = directory.get_user_policy(party)
            if rule is not None and rule.decision == "deny":
                return PolicyDecision(False, f"user-denied:{party}")
        if source.domain == destination.domain:
            return _SAME_DOMAIN
        source_route = directory.get_domain_route(source.domain)
        destination_route = directory.get_domain_route(destination.domain)
        source_internal = source_route is not None and source_route.internal
        destination_internal = destination_route is not None and destination_route.internal
        if source_internal and destination_internal:
            return _INTERNAL
        agreement = directory.get_domain_agreement(source.domain, destination.domain)
        if agreement is None:
            return _NO_AGREEMENT
        if agreement.decision == "deny":
            return _AGREEMENT_DENIES
        if agreement.opt_in_required:
            for party, internal in ((source, source_internal),
                                    (destination, destination_internal)):
                if not internal:
                    continue
                rule = directory.get_user_policy(party)
                if rule is None or not (rule.opted_in or rule.decision == "allow"):
                    return PolicyDecision(False, f"not-opted-in:{party}")
        return _AGREEMENT
