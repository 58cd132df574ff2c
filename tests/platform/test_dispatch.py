"""The release order of a study's tasks: longest remaining chain first (platform/dispatch.py)."""

from __future__ import annotations

import pytest
from salient.platform.dispatch import ListScheduler
from salient.platform.graph import TRIAL, Node, StudyGraph
from salient.platform.study.schema import StageResources

ONE = StageResources()


def _demo_shape() -> tuple[StudyGraph, dict[str, float]]:
    """The demo's shape in miniature: a long generator chain (seed 30), a short one (seed 10), a
    dosed trial on each pool and a dose-0 trial per seed size (no inputs)."""
    specs = [
        ("ucmt/30", (), 225.0),
        ("ucmt/10", (), 120.0),
        ("pool/30", ("ucmt/30",), 240.0),
        ("pool/10", ("ucmt/10",), 50.0),
        ("trial/0x-30", (), 80.0),
        ("trial/0x-10", (), 80.0),
        ("trial/1x-30", ("pool/30",), 80.0),
        ("trial/1x-10", ("pool/10",), 80.0),
    ]
    nodes = {
        nid: Node(nid, TRIAL if nid.startswith("trial") else nid.split("/")[0], deps, (), ONE) for nid, deps, _ in specs
    }
    return StudyGraph(nodes), {nid: cost for nid, _, cost in specs}


def _ids(nodes: list[Node]) -> list[str]:
    return [n.id for n in nodes]


def test_generator_chains_start_before_dose_0_trials() -> None:
    graph, cost = _demo_shape()
    s = ListScheduler(graph, cost, capacity=2, weight=lambda n: 1)
    assert _ids(s.start()) == ["ucmt/30", "ucmt/10"]  # not the dose-0 trials, although they are ready
    assert s.start() == []  # both slots taken
    s.finish("ucmt/10")
    assert _ids(s.start()) == ["pool/10"]  # its chain (50 + 80) outranks a dose-0 trial (80)


def test_the_ready_node_with_the_longest_remaining_chain_starts_first() -> None:
    graph, cost = _demo_shape()
    s = ListScheduler(graph, cost, capacity=1, weight=lambda n: 1)
    order = []
    while s.pending:
        started = s.start()
        assert len(started) <= 1
        order += _ids(started)
        s.finish(started[0].id)
    assert order == [
        "ucmt/30",  # 225 + 240 + 80
        "pool/30",  # 240 + 80: ready now, and longer than ucmt/10's chain (120 + 50 + 80)
        "ucmt/10",
        "pool/10",  # 130 > 80
        "trial/0x-30",  # ties by graph order
        "trial/0x-10",
        "trial/1x-30",
        "trial/1x-10",
    ]


def test_capacity_weights_and_nodes_already_done() -> None:
    wide = StageResources(workers=4)
    nodes = {
        "mask_vae/a": Node("mask_vae/a", "mask_vae", (), (), ONE),
        "diffusion/a": Node("diffusion/a", "diffusion", (), (), wide),
        "pool/a": Node("pool/a", "pool", ("mask_vae/a", "diffusion/a"), (), ONE),
        "trial/t": Node("trial/t", TRIAL, ("pool/a",), ("t",), ONE),
        "trial/u": Node("trial/u", TRIAL, (), ("u",), ONE),
    }
    graph = StudyGraph(nodes)
    cost = {"mask_vae/a": 1.0, "diffusion/a": 50.0, "pool/a": 5.0, "trial/t": 2.0, "trial/u": 2.0}
    # The data-parallel node occupies no slot (its workers are elsewhere); mask_vae/a is done already.
    s = ListScheduler(graph, cost, capacity=1, weight=lambda n: int(n.resources.workers <= 1), done=["mask_vae/a"])
    assert _ids(s.start()) == ["diffusion/a", "trial/u"]
    assert s.free == 0 and s.running == 2
    s.finish("diffusion/a")
    assert s.start() == []  # pool/a is ready (mask_vae/a was done) but the one slot is taken
    s.finish("trial/u")
    assert _ids(s.start()) == ["pool/a"]
    s.finish("pool/a")
    assert _ids(s.start()) == ["trial/t"]
    s.finish("trial/t")
    assert not s.pending and s.free == 1


def test_a_node_that_does_not_fit_lets_smaller_ones_start() -> None:
    nodes = {
        "trial/first": Node("trial/first", TRIAL, (), ("first",), ONE),
        "diffusion/big": Node("diffusion/big", "diffusion", (), (), StageResources(workers=2)),
        "trial/small": Node("trial/small", TRIAL, (), ("small",), ONE),
    }
    cost = {"trial/first": 20.0, "diffusion/big": 10.0, "trial/small": 1.0}
    s = ListScheduler(StudyGraph(nodes), cost, capacity=2, weight=lambda n: n.slots)
    assert _ids(s.start()) == ["trial/first", "trial/small"]  # big (2 workers) does not fit beside first
    s.finish("trial/first")
    assert s.start() == []  # one worker free, big needs two
    s.finish("trial/small")
    assert _ids(s.start()) == ["diffusion/big"]


@pytest.mark.parametrize(
    ("deps", "workers", "message"),
    [
        (("pool/missing",), 1, r"trial/t depends on \['pool/missing'\], which are not nodes of the graph"),
        ((), 3, "trial/t occupies 3, more than the capacity 2"),
    ],
)
def test_a_node_that_could_never_start_is_refused(deps: tuple[str, ...], workers: int, message: str) -> None:
    nodes = {"trial/t": Node("trial/t", TRIAL, deps, ("t",), StageResources(workers=workers))}
    with pytest.raises(ValueError, match=message):
        ListScheduler(StudyGraph(nodes), {"trial/t": 1.0}, capacity=2, weight=lambda n: n.slots)


def test_unbounded_capacity_starts_every_ready_node() -> None:
    graph, cost = _demo_shape()
    s = ListScheduler(graph, cost, capacity=None, weight=lambda n: 1)
    assert set(_ids(s.start())) == {"ucmt/30", "ucmt/10", "trial/0x-30", "trial/0x-10"}


def test_capacity_must_be_positive() -> None:
    graph, cost = _demo_shape()
    with pytest.raises(ValueError, match="capacity must be >= 1 or None, got 0"):
        ListScheduler(graph, cost, capacity=0, weight=lambda n: 1)
