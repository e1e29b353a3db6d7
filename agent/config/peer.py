"""One ``[[peers]]`` entry of a node config: the ``Peer`` dataclass and its parser.

``parse_peer`` validates one decoded table into a ``Peer``; the node config's parser
(``agent.config.node.parse_config``) calls it for each entry and checks what concerns the
peers together (no duplicate ids, keys under CURVE). Errors are the caller's class, naming
the entry's field: ``config.peers[1].stage: must be an integer >= 0, got -1``. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Tuple, Type

from agent.config.checks import check_endpoint_from, check_node_id, check_rate
from agent.config.fields import Fields
from agent.net.keyfiles import peer_key_spec


@dataclass(frozen=True)
class Peer:
    """A neighbour this node exchanges messages with (predecessor, successor or source)."""

    id: str  # node id of the peer (unique in the fleet)
    stage: int  # 0 for a source, else the 1-based stage the peer serves
    control_address: str  # the peer's PUB endpoint (we SUBscribe to it)
    data_address: str  # the peer's ROUTER endpoint (we send tasks/results there)
    link_rate_bytes_s: float = 0.0  # r_ij estimate for this node -> peer; 0 = unknown (no cost)
    public_key: str = ""  # the peer's CURVE public key (Z85); used when security = "curve"
    last_stage: int = 0  # a peer holding several stages serves stage..last_stage; 0 = just stage

    @property
    def stages(self) -> Tuple[int, int]:
        """(first, last) stage the peer serves; (0, 0) for a source."""
        return (self.stage, max(self.stage, self.last_stage))

    def serves(self, stage: int) -> bool:
        """True when the peer is a worker holding ``stage``."""
        first, last = self.stages
        return self.stage > 0 and first <= stage <= last


PEER_FIELDS = frozenset(f.name for f in fields(Peer))


def parse_peer(obj: Any, where: str, base_dir: str, error: Type[Exception]) -> Peer:
    """Validate one decoded ``[[peers]]`` table (``where``: its path, e.g. ``config.peers[0]``)
    into a ``Peer``; relative ``ipc://`` endpoints and key files are taken from ``base_dir``
    (the config's folder). Raises ``error`` naming the field and the value."""
    if not isinstance(obj, Mapping):
        raise error("%s: must be a table, got %r" % (where, obj))
    unknown = sorted(set(obj) - PEER_FIELDS)
    if unknown:
        raise error("%s: unknown field(s) %s (known: %s)"
                    % (where, ", ".join(unknown), ", ".join(sorted(PEER_FIELDS))))
    r = Fields(obj, where, error)
    peer = Peer(
        id=r.str("id"),
        stage=r.int("stage", lo=0),
        control_address=check_endpoint_from(r.str("control_address"), where + ".control_address",
                                            base_dir, error),
        data_address=check_endpoint_from(r.str("data_address"), where + ".data_address",
                                         base_dir, error),
        link_rate_bytes_s=check_rate(r.num("link_rate_bytes_s", 0.0), r.path("link_rate_bytes_s"),
                                     error, "unknown"),  # the wire's range, as a capacity
        public_key=peer_key_spec(r.str("public_key", ""), base_dir),  # a file: config-relative
        last_stage=r.int("last_stage", 0, lo=0),
    )
    if peer.last_stage and peer.last_stage < peer.stage:
        raise error("%s.last_stage: must be 0 or >= stage %d, got %r"
                    % (where, peer.stage, peer.last_stage))
    check_node_id(peer.id, where + ".id", error)
    return peer
