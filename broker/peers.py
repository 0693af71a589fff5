"""What the relay needs from the cluster, as a typed interface that ``cluster/`` implements.

The relay never imports the cluster package: other nodes reach it through two protocols.
Providers on other nodes are :class:`broker.registry.Provider` entries in the registry (with
``is_remote`` set; ``cluster.links.RemoteProvider`` implements it). Inbound broker links,
sessions whose SETUP carries a link entry, are handed to a :class:`LinkAuthority`
(``cluster.links.Links`` implements it), set on ``Broker.links`` when the node is in a cluster.
Shaped after memberlist's ``Delegate``: the core calls out, the outer package answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from broker.auth.principal import Principal
    from broker.session import Session

__all__ = ["LinkAuthority"]


class LinkAuthority(Protocol):
    """Admits broker links from other nodes and takes the METADATA_PUSH frames they send."""

    def authenticate(self, session: Session, entry: bytes) -> Principal:
        """The principal of an inbound link from its SETUP link entry (pending until a proof
        arrives when a cluster key is set); raises ``FrameError(REJECTED_SETUP)`` to refuse it."""
        ...

    def on_link_push(self, session: Session, metadata: bytes, frame: bytes) -> None:
        """A METADATA_PUSH on an inbound link: its handshake proof, or a routed push to deliver
        to this node's own providers (``frame`` is the whole frame, forwarded as is)."""
        ...
