"""Whatever frames peers send — mutated valid frames and random bytes, from outsiders, members and
the validator, on ``submit``, ``submit-batch``, ``tx``, ``consensus``, gossip and the framing — a
real daemon node refuses each with a reason from the closed set, never fails in a handler, keeps
committing, and counts exactly the refusals that are misbehaviour, each once, under its reason
(``sims/fuzz.py``: the frames enter the node's own stream dispatch and topic validator).

The long run (a million frames) is ``python benchmarks/fuzz.py`` and the ``slow`` test below."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sims.fuzz import CHANNELS, FuzzTally, InProcessTarget, fuzz_in_process, mutate

pytestmark = pytest.mark.net  # a real libp2p host on loopback


def test_any_frame_is_refused_with_a_reason_and_counted_once(tmp_path: Path) -> None:
    async def main() -> FuzzTally:
        async with InProcessTarget.open(tmp_path, seed=1) as target:
            corpus = target.corpus(seed=1)
            pool = corpus.pool()
            tally = FuzzTally()

            @settings(
                max_examples=400,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(channel=st.sampled_from(CHANNELS), data=st.data())
            def prop(channel: str, data: st.DataObject) -> None:
                rng = data.draw(st.randoms(use_true_random=False))
                if data.draw(st.booleans()):
                    body = data.draw(st.binary(max_size=400))
                else:
                    base = data.draw(st.sampled_from(corpus.frames[channel]))
                    body = mutate(base, rng, pool)
                peer = trio.from_thread.run_sync(target.sender, rng, channel)
                trio.from_thread.run(target.send, channel, peer, body, tally)
                trio.from_thread.run_sync(target.collect, tally)
                assert not tally.crashes, tally.crashes
                assert not tally.unknown_reasons, tally.unknown_reasons
                assert tally.counted == tally.expected_counted

            await trio.to_thread.run_sync(prop)
            return tally

    tally = trio.run(main)
    # the property met every kind of outcome: frames taken, refusals counted and not counted
    assert tally.accepted and tally.expected_counted
    assert set(tally.refused) - set(tally.expected_counted), tally.refused
    assert {"malformed", "not_permitted", "bad_signature"} <= set(tally.expected_counted)


def test_mutations_are_a_function_of_the_seed_and_never_the_input() -> None:
    pool = [bytes(range(40)), b"\x93\xa2gn\x01\xc0"]
    a = [mutate(pool[0], random.Random(s), pool) for s in range(200)]
    b = [mutate(pool[0], random.Random(s), pool) for s in range(200)]
    assert a == b
    assert pool[0] not in a
    assert len(set(a)) > 150


def test_a_seeded_run_through_every_channel(tmp_path: Path) -> None:
    tally = trio.run(lambda: fuzz_in_process(6_000, seed=7, directory=tmp_path))
    assert tally.ok, tally.lines()
    assert set(tally.sent) == set(CHANNELS)
    assert tally.frames == 6_000


@pytest.mark.slow
def test_a_million_frames(tmp_path: Path) -> None:
    tally = trio.run(lambda: fuzz_in_process(1_000_000, seed=1, directory=tmp_path))
    assert tally.ok, tally.lines()
