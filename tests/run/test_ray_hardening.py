"""Hardening of `--engine ray`: a pool sized to the cluster's nodes, a connection that fails in one line.

The pool's plan is pure (node lists); the connection tests start no cluster."""

from __future__ import annotations

import pytest

from gradcam_cli.errors import EngineError


def test_actors_fit_the_largest_node_or_are_refused():
    from gradcam_cli.run.ray_engine import RayOptions, plan_pool

    two_small = [{"CPU": 2}, {"CPU": 2}]  # 4 CPUs in all, but no node holds a 4-CPU actor
    assert plan_pool(two_small, RayOptions(), batches=100) == (2, 0.0, 2.0)
    assert plan_pool(two_small, RayOptions(workers=1), batches=100) == (1, 0.0, 2.0)
    assert plan_pool(two_small, RayOptions(workers=4), batches=100) == (4, 0.0, 1.0)
    assert plan_pool([{"CPU": 8}, {"CPU": 2}], RayOptions(), batches=100) == (2, 0.0, 4.0)  # 2 on the big one
    assert plan_pool([{"CPU": 3}, {"CPU": 3}], RayOptions(cpus_per_worker=2), batches=100) == (2, 0.0, 2.0)
    head = {"CPU": 0, "memory": 1e9}  # a head node that runs no work, a dead node left out by the caller
    assert plan_pool([head, {"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 1}], RayOptions(), batches=100) == (3, 1.0, 1.0)
    assert plan_pool([{"CPU": 4, "GPU": 0.5}], RayOptions(gpus_per_worker=0.25), batches=100) == (2, 0.25, 1.0)
    with pytest.raises(EngineError) as raised:
        plan_pool(two_small, RayOptions(cpus_per_worker=4), batches=100)
    assert str(raised.value) == (
        "no node of the Ray cluster can host a worker of 4 CPUs and 0 GPUs (its 2 nodes have at most 2 CPUs and "
        "0 GPUs each); lower --cpus-per-worker or --gpus-per-worker, or add a larger node")
    with pytest.raises(EngineError, match=r"^no node of the Ray cluster can host a worker of 1 CPUs and 2 GPUs"):
        plan_pool([{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}], RayOptions(gpus_per_worker=2), batches=5)
    with pytest.raises(EngineError) as raised:
        plan_pool(two_small, RayOptions(workers=3, cpus_per_worker=2), batches=100)
    assert str(raised.value) == (
        "the Ray cluster has 4 CPUs and 0 GPUs on 2 nodes, room for 2 workers x (2 CPUs, 0 GPUs), but 3 were asked "
        "for; lower --workers, --cpus-per-worker or --gpus-per-worker, or add nodes")
    with pytest.raises(EngineError, match="^no node"):
        plan_pool([], RayOptions(), batches=5)  # no live node
