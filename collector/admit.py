"""What a remote sensor may store: its identity, its spools, its host names, and TTPHashes the
collector recomputes.

A sensor is who its credentials say: the TLS client certificate (its common name, and DNS
names in its subject alternative names) or, through JetStream, the subject it may publish on
(which NATS permissions bind to a NATS user). From that identity:

* a spool id belongs to the first sensor that delivered it; another sensor naming it is
  refused (it would otherwise write under that spool's sequence numbers, and the owner's later
  frames would be dropped as duplicates);
* an event may name only a host the identity speaks for (``host.name``, compared without case);
* every TTPHash is recomputed from the event's own fields: an equal one is ``verified``, a
  different one is replaced and the sensor's kept as ``ttphash.claimed`` (``recomputed``), and
  one the collector cannot compute (another version, no OS) is moved to ``ttphash.claimed`` and
  kept out of the baseline (``unverifiable``). ``ttphash.check`` says which; it is stored with
  the event. The fields themselves are the sensor's word: a compromised sensor can still lie
  about what ran, but no longer label an event with a hash its fields do not give.

The local delivery (the sensor's own spool into its own store) skips all of this: it is one
process trusting itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from common import ttphash
from common.schema import Event, get_steps

MAX_SEQ = 2**63 - 1                    # what the stores' 64-bit integer columns hold
_TEXT_FIELDS = ("@timestamp", "event.action", "event.id", "host.name", "ttphash.value")
# Each with its steps, split once: get_path splits its path at every call, and a frame has
# five of them for each of its events.
_TEXT_STEPS = tuple((path, tuple(path.split("."))) for path in _TEXT_FIELDS)
_HOST_STEPS = ("host", "name")

VERIFIED, RECOMPUTED, UNVERIFIABLE = "verified", "recomputed", "unverifiable"


class Refused(ValueError):
    """The sensor may not do this; the message says why (it is sent back and logged)."""


@dataclass(frozen=True)
class Identity:
    """Who a remote sensor is, and the host names it may speak for (lower case)."""

    name: str
    hosts: frozenset[str]

    def speaks_for(self, host: str) -> bool:
        return host.casefold() in self.hosts


def certificate_identity(certificate: dict[str, Any]) -> Identity:
    """The identity in a verified peer certificate, as ``ssl.SSLSocket.getpeercert()`` gives
    it: its common name, and its DNS subject alternative names as further host names."""
    name = None
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = str(value)
    if not name:
        raise Refused("the certificate has no common name")
    hosts = {name.casefold()}
    hosts.update(str(value).casefold() for kind, value in certificate.get("subjectAltName", ())
                 if kind == "DNS")
    return Identity(name, frozenset(hosts))


@dataclass
class AdmitCounts:
    """What admission did to the events of the frames it passed."""

    verified: int = 0
    recomputed: int = 0
    unverifiable: int = 0
    refused_frames: int = 0
    refused_spools: int = 0

    def add(self, check: str) -> None:
        if check == VERIFIED:
            self.verified += 1
        elif check == RECOMPUTED:
            self.recomputed += 1
        else:
            self.unverifiable += 1


def check_frame(first_seq: int, count: int, events: list) -> None:
    """Refuse a frame whose numbers or fields the store cannot hold as stored events: a
    sequence past 2^63, a count that disagrees with its events, an event that is not a map,
    or a text field of another type."""
    if first_seq + count > MAX_SEQ:
        raise Refused(f"sequence numbers past 2^63 ({first_seq} + {count})")
    if len(events) != count:
        raise Refused(f"the frame says {count} events and holds {len(events)}")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise Refused(f"event {index} is not a map")
        for path, steps in _TEXT_STEPS:
            node = get_steps(event, steps)
            if node is not None and not isinstance(node, str):
                raise Refused(f"event {index}: {path} is a {type(node).__name__}, not text")


def check_hosts(identity: Identity, events: list[Event]) -> None:
    """Refuse a frame with an event of a host the identity does not speak for."""
    allowed = None  # the last host name allowed: a sensor's frame names its host again and again
    for index, event in enumerate(events):
        host = get_steps(event, _HOST_STEPS)
        if host is None or host == allowed:
            continue
        if identity.speaks_for(host):
            allowed = host
        else:
            raise Refused(f"event {index} names host {host!r}, which certificate "
                          f"{identity.name!r} does not speak for "
                          f"(it names {', '.join(sorted(identity.hosts))})")


def check_ttphash(event: Event, memo: ttphash.Memo | None = None,
                  canonical: dict[str, bytes] | None = None) -> str | None:
    """Recompute the event's TTPHash (see the module's docstring); return the check, or None
    for an event that carries no TTPHash. ``memo``: hashes remembered by the values they come
    from (a fleet runs the same commands again and again); it gives what compute() gives.
    ``canonical``: where the canonical input of a hash computed here is put, by its value."""
    claimed = event.get("ttphash")
    if claimed is None:
        return None
    if not isinstance(claimed, dict):
        event["ttphash"] = {"claimed": claimed, "check": UNVERIFIABLE}
        return UNVERIFIABLE
    try:
        if claimed.get("version") not in (None, ttphash.VERSION):
            raise ttphash.TTPHashError(f"version {claimed.get('version')!r}")
        result = memo.compute(event) if memo is not None else ttphash.compute(event)
    except ttphash.TTPHashError:
        event["ttphash"] = {"claimed": claimed.get("value"), "version": claimed.get("version"),
                            "check": UNVERIFIABLE}
        return UNVERIFIABLE
    fresh = result.as_field()
    if canonical is not None:
        canonical[result.value] = result.canonical
    if claimed.get("value") == fresh["value"] and claimed.get("complete") == fresh["complete"]:
        claimed["check"] = VERIFIED
        return VERIFIED
    fresh.update(claimed=claimed.get("value"), check=RECOMPUTED)
    event["ttphash"] = fresh
    return RECOMPUTED


@dataclass
class Admission:
    """What admitting a frame found, beyond the changes it made to the events in place.

    ``replaced``: the indexes of the events whose ``ttphash`` field was replaced (recomputed
    or unverifiable) or carried a check of the sensor's own: their bytes as received are no
    longer the event. Any other verified event only gains ``ttphash.check``, which the store
    keeps in a column of its own (Store.event_doc puts it back). ``canonical``: the canonical
    input of each TTPHash computed, by value, which the store keeps for a TTPHash it has not
    seen (Incoming.canonical) instead of computing it a second time."""

    replaced: list[int]
    canonical: dict[str, bytes]

    def received(self, documents: Sequence[Any] | None) -> Sequence[Any] | None:
        """The frame's events as received (wire.unpack_batch_documents), with None for each
        event whose TTPHash was replaced: the store encodes those again."""
        if documents is None or not self.replaced:
            return documents
        kept: list[Any] = list(documents)
        for index in self.replaced:
            kept[index] = None
        return kept


def admit(identity: Identity, first_seq: int, count: int, events: list,
          counts: AdmitCounts, memo: ttphash.Memo | None = None) -> Admission:
    """Check a frame from ``identity`` and recompute its TTPHashes in place (through
    ``memo``, if given: one thread at a time); raise :class:`Refused` for a frame the store
    must not see."""
    try:
        check_frame(first_seq, count, events)
        check_hosts(identity, events)
    except Refused:
        counts.refused_frames += 1
        raise
    admission = Admission([], {})
    for index, event in enumerate(events):
        claimed = event.get("ttphash")
        # A check the sensor wrote itself is overwritten: that event is stored as admitted,
        # so that no stored document carries the sensor's word for the collector's.
        own_check = isinstance(claimed, dict) and "check" in claimed
        check = check_ttphash(event, memo, admission.canonical)
        if check is not None:
            counts.add(check)
            if check != VERIFIED or own_check:
                admission.replaced.append(index)
    return admission


class SpoolOwners:
    """Which sensor owns each spool id, as the store records it (cached, as ownership never
    changes once claimed; the cache is bounded, the store is the truth)."""

    CACHE = 65536

    def __init__(self, store: Any) -> None:
        self.store = store
        self._owner: dict[str, str] = {}

    def claim(self, identity: Identity, spool: str, counts: AdmitCounts) -> None:
        """Raise :class:`Refused` when another sensor owns ``spool``."""
        owner = self._owner.get(spool)
        if owner is None:
            if len(self._owner) >= self.CACHE:
                self._owner.clear()
            owner = self._owner[spool] = self.store.claim_spool(spool, identity.name)
        if owner != identity.name:
            counts.refused_spools += 1
            raise Refused(f"spool {spool} belongs to sensor {owner!r}, not {identity.name!r}")
