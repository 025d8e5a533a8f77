"""The campaign's Byzantine validators: a coalition that tries to split the honest validators.

Rules of this module: a coalition member never runs an executor. It splits the honest validators
into the simulation's two halves; as proposer it sends different valid blocks to the two halves (20 %
of the time an invalid block to everyone), proposing early for this round, the next round and the
next height; it echoes each half's votes back to that half as its own (30 % of the time to
everyone, so the double votes are seen as evidence) and precommits what a half prevoted. Every
choice is drawn from the simulation's seeded generator, in event order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gridnode.core.consensus_messages import (
    NIL,
    ConsensusMessage,
    Proposal,
    Vote,
    VoteType,
    encode_message,
    sign_proposal,
    sign_vote,
)
from gridnode.core.crypto import KeyPair
from market.codec import pack

if TYPE_CHECKING:
    from sims.simnet import Simulation

__all__ = ["ByzantineValidator"]


class ByzantineValidator:
    """A coalition member: equivocates as proposer and echoes each honest half's votes to it."""

    def __init__(self, sim: Simulation, name: str, index: int, key: KeyPair) -> None:
        self.sim = sim
        self.name = name
        self.index = index
        self.key = key
        self.proposed: dict[tuple[int, int], None] = {}
        self.echoed: dict[tuple[int, int, int, bytes, int], None] = {}

    def on_message(self, sender: str, msg: ConsensusMessage) -> None:
        sim = self.sim
        if not isinstance(msg, Proposal | Vote):
            return
        h, r = msg.height, msg.round
        # propose early for this round, the next round and the next height: honest nodes keep
        # proposals for later rounds and buffer the next height's messages
        for ph, pr in ((h, r), (h, r + 1), (h + 1, 0)):
            if sim.validators.proposer(ph, pr) == self.index and (ph, pr) not in self.proposed:
                self.proposed[(ph, pr)] = None
                self._equivocate(ph, pr)
        if isinstance(msg, Vote) and sender in sim.half_of:
            side = sim.half_of[sender]
            key = (h, r, int(msg.vote_type), msg.block_hash, side)
            if key in self.echoed:
                return
            self.echoed[key] = None
            vote = sign_vote(
                self.key,
                vote_type=msg.vote_type,
                height=h,
                round_=r,
                value=msg.block_hash,
                validator=self.index,
            )
            everyone = sim.rng.random() < 0.3
            targets = sim.honest_validators if everyone else sim.halves[side]
            sim.byzantine_events += 1
            for dst in targets:
                sim.transmit(self.name, dst, encode_message(vote))
            if msg.vote_type is VoteType.PREVOTE and msg.block_hash != NIL:
                # also precommit what this half prevoted: the half can then decide on its own
                pc = sign_vote(
                    self.key,
                    vote_type=VoteType.PRECOMMIT,
                    height=h,
                    round_=r,
                    value=msg.block_hash,
                    validator=self.index,
                )
                for dst in sim.halves[side]:
                    sim.transmit(self.name, dst, encode_message(pc))

    def _equivocate(self, h: int, r: int) -> None:
        sim = self.sim
        sim.byzantine_events += 1
        t = sim.epoch_ms + sim.now
        if sim.rng.random() < 0.2:  # an invalid block (wrong height), to everyone
            bad = pack(["gn.simblock", 1, h + 7, t, []])
            prop = sign_proposal(
                self.key, height=h, round_=r, block=bad, valid_round=-1, proposer=self.index
            )
            for dst in sim.honest_validators:
                sim.transmit(self.name, dst, encode_message(prop))
            return
        for side, members in enumerate(sim.halves):
            block = pack(["gn.simblock", 1, h, t + side, []])
            prop = sign_proposal(
                self.key, height=h, round_=r, block=block, valid_round=-1, proposer=self.index
            )
            for dst in members:
                sim.transmit(self.name, dst, encode_message(prop))
