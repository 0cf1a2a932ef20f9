"""Async flow control (`learner.credits`): the budget, one outstanding window per actor, a request served
only once the rollout before it has arrived (or it lapsed), void grants of actors that went away, when a
smaller batch may be taken; and the figures `powernet bench actors` derives from a run."""

from __future__ import annotations

from collections import Counter

import pytest

from launch.bench_actors import steady_window, usage
from learner.credits import LAPSE_S, Credits

A, B = b"conn-a", b"conn-b"


def _alive(*identities: bytes):
    return lambda identity: identity in identities


def test_the_budget_follows_the_batch_and_the_lag_bound():
    assert Credits(actors=32, batch=32, max_lag=2).budget == 32          # one window per actor
    assert Credits(actors=32, batch=8, max_lag=2).budget == 16           # two batches ahead, no more
    assert Credits(actors=32, batch=8, max_lag=0).budget == 8
    many = Credits(actors=2, batch=8, max_lag=2)                          # more rollouts per update than actors
    assert many.budget == 8 and many.per_actor == 4


def test_an_actor_gets_its_next_window_once_its_rollout_has_been_taken():
    credits = Credits(actors=2, batch=2, max_lag=1)
    queued: Counter[int] = Counter()
    alive = _alive(A, B)
    credits.request(0, A, -1, now=0.0)
    credits.request(1, B, -1, now=0.1)
    assert [r.actor for r in credits.grant(queued, 0, 0.2, alive)] == [0, 1]
    credits.request(0, A, 0, now=0.3)                      # asks again before its rollout has arrived
    assert credits.grant(queued, 0, 0.4, alive) == []     # the rollout it follows is still on its way
    credits.arrived(0, 0)
    queued[0] += 1
    assert credits.grant(queued, 1, 0.5, alive) == []     # its rollout waits for the update: no second window
    queued[0] -= 1                                         # the update took it
    assert [r.actor for r in credits.grant(queued, 0, 0.6, alive)] == [0]
    assert credits.grants == 3


def test_a_request_whose_rollout_never_arrives_is_served_after_the_lapse():
    credits = Credits(actors=1, batch=1, max_lag=1)
    credits.request(0, A, 7, now=0.0)
    assert credits.grant(Counter(), 0, LAPSE_S - 0.1, _alive(A)) == []
    assert [r.actor for r in credits.grant(Counter(), 0, LAPSE_S + 0.1, _alive(A))] == [0]


def test_grants_stop_at_the_budget_and_void_ones_free_it():
    credits = Credits(actors=4, batch=2, max_lag=1)       # budget 2
    for k, identity in enumerate((b"c0", b"c1", b"c2", b"c3")):
        credits.request(k, identity, -1, now=float(k))
    everyone = _alive(b"c0", b"c1", b"c2", b"c3")
    assert [r.actor for r in credits.grant(Counter(), 0, 5.0, everyone)] == [0, 1]
    assert credits.grant(Counter(), 0, 5.0, everyone) == []
    # actor 0's connection is gone: its window will not come, and actor 2 (the oldest request) gets one
    assert [r.actor for r in credits.grant(Counter(), 0, 6.0, _alive(b"c1", b"c2", b"c3"))] == [2]


def test_a_smaller_batch_only_when_no_rollout_is_on_its_way():
    credits = Credits(actors=2, batch=2, max_lag=1)
    alive = _alive(A, B)
    everyone = lambda k: True  # noqa: E731
    queued = Counter({0: 1})
    assert not credits.settled(queued, 0.0, alive, everyone, first=True)  # the first update waits for joins
    credits.hello(0)
    credits.first_wave = 1                                   # ... of the actors started first
    assert credits.settled(queued, 0.0, alive, lambda k: k == 0, first=True)
    credits.hello(1)
    assert not credits.settled(queued, 0.0, alive, everyone)  # actor 1 is between its rollout and its request
    credits.request(1, B, -1, now=0.0)
    credits.grant(queued, 1, 0.0, alive)
    assert not credits.settled(queued, 0.1, alive, everyone)  # actor 1's window is in flight
    assert credits.settled(queued, 0.1, _alive(A), lambda k: k == 0)  # ... unless actor 1 is gone
    credits.arrived(1, 0)
    credits.request(1, B, 0, now=0.2)
    assert credits.settled(Counter({0: 1, 1: 1}), 0.3, alive, everyone)


def test_bench_actors_figures(tmp_path):
    metrics = tmp_path / "metrics.csv"
    rows = ["update,env_steps,wall_s"] + [f"{u},{40 * u},{1.0 + 0.1 * u}" for u in range(1, 11)]
    metrics.write_text("\n".join(rows) + "\n")
    got = steady_window(metrics, warmup=0.5)
    assert got["env_steps_per_s"] == pytest.approx(400.0) and got["env_steps_per_s_overall"] == pytest.approx(400.0)
    assert got["updates"] == 10 and got["env_steps"] == 400
    stats = {"dropped": {"stale": 3, "queue_full": 1, "bad_meta": 5}, "policy_lag_counts": {"0": 4, "1": 12}}
    fig = usage(stats, "async", 2)
    assert fig["used_rollouts"] == 16 and fig["wasted_rollouts"] == 4 and fig["wasted_share"] == 0.2
    assert fig["mean_policy_lag"] == 0.75 and fig["max_policy_lag"] == 1
