"""Hardening of `--engine ray`: a pool sized to the cluster's nodes, a connection that fails in one line.

The pool's plan is pure (node lists); the connection tests start no cluster."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from helpers import cli, invoke

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


def free_port() -> int:
    """A loopback port nobody listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.ray
def test_an_address_where_nothing_listens_is_one_line_and_exit_2_at_once(tmp_path, tiny, monkeypatch):
    options, images = tiny
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = free_port()
    for address, env, source in ((f"ray://127.0.0.1:{port}", {}, "--ray-address"),
                                 (None, {"RAY_ADDRESS": f"127.0.0.1:{port}"}, "RAY_ADDRESS")):  # "no address" joins it
        out = tmp_path / source
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        started = time.monotonic()
        proc = cli(images, "--out", out, *options, "--engine", "ray",
                   *(["--ray-address", address] if address else []), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True)
        _, err = proc.communicate(timeout=180)
        took = time.monotonic() - started
        assert proc.returncode == 2, err
        assert err == (f"Error: nothing answers at {address or env['RAY_ADDRESS']} ({source}): connection refused; "
                       "start the cluster (ray start --head) or give the address it printed\n")
        assert took < 60, f"{took:.0f} s"  # Ray itself waits 30 s (ray://) or minutes (host:port), then a traceback
        assert not out.exists()


@pytest.mark.ray
def test_credentials_the_cluster_refuses_are_one_line_naming_ray_auth_mode(tmp_path, tiny, monkeypatch):
    import ray
    from ray.exceptions import AuthenticationError

    def refuse(**kwargs):  # what Ray 2.60 raises when the cluster has a token and this driver another, or none
        raise AuthenticationError(
            "RPC error: InvalidAuthToken: Authentication token is missing or incorrect. Note: RAY_AUTH_MODE is "
            "currently 'disabled' (not 'token'). Ensure that the token for the cluster is available ...")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    options, images = tiny
    result = invoke("explain", images, "--out", tmp_path / "o", *options, "--engine", "ray", "--ray-address", "auto")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: cannot join the Ray cluster at auto (--ray-address): RPC error: InvalidAuthToken: Authentication token "
        "is missing or incorrect; the cluster and this machine disagree on authentication: for a cluster made with "
        "`ray start` that has a token, set RAY_AUTH_MODE=token and give this machine the cluster's token "
        "(~/.ray/auth_token, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH); see docs/cluster.md"]
    assert not (tmp_path / "o").exists()


@pytest.mark.ray
def test_a_cluster_that_does_not_answer_is_given_up_after_the_time_limit(monkeypatch):
    import ray

    from gradcam_cli.run import ray_cluster

    monkeypatch.setattr(ray, "init", lambda **kwargs: time.sleep(30))  # an address that takes the call, never answers
    monkeypatch.setattr(ray_cluster, "CONNECT_TIMEOUT", 0.5)
    started = time.monotonic()
    with pytest.raises(EngineError) as raised:
        ray_cluster.connect(ray_cluster.RayOptions(address="auto"))
    assert time.monotonic() - started < 5
    assert str(raised.value) == ("the Ray cluster at auto (--ray-address) did not answer within 0.5 s; check the "
                                 "address, and that the cluster is up (ray status)")
