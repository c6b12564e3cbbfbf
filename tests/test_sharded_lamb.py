"""LAMB on a variable split into shards takes its norms over the whole variable.

tf-keras under ``ParameterServerStrategy`` with a ``variable_partitioner`` hands
the optimizer each shard of a ``ShardedVariable`` as a variable of its own.
The runs happen in a child process (``distributed_cases.py sharded``) that
starts an in-process cluster on 127.0.0.1: a chief, one worker and two
parameter servers, each variable split in two. (Keras 3 cannot train a
``ShardedVariable``: its variables do not expose the ``handle`` that
``GradientTape`` needs, so this is tf-keras only.)

The kernel's two shards differ tenfold in scale, so a trust ratio per shard
would move the weights by ~10^5 ulps more than the whole-variable one.
Measured: sharded and unsharded training agree within 2 ulps (the norm is
summed in another order); we allow ``ULPS = 8``.
"""

from __future__ import annotations

import numpy as np
import pytest

import distributed_cases as cases

ULPS = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return cases.run_in_child("sharded", tmp_path_factory.mktemp("sharded") / "results.pkl", timeout=300)


def assert_close(ours, reference, tolerance):
    for name in reference:
        for column, (a, b) in enumerate(zip(ours[name], reference[name])):
            distance = cases.ulps(a, b)
            assert distance <= tolerance, f"{name}, column {column}: {distance:.2f} ulps"


@pytest.mark.parametrize("options", ["", "/bias_correction", "/layerwise"])
def test_sharded_variable_trains_like_the_whole_variable(runs, options):
    assert_close(runs[f"sharded{options}"], runs[f"whole{options}"], ULPS)


def test_a_trust_ratio_per_shard_would_be_far_off(runs):
    """Guards the test above: treating the shards as separate variables gives other numbers."""
    split, whole = runs["split"], runs["whole"]
    assert max(cases.ulps(split[n][0], whole[n][0]) for n in whole) > 1000 * ULPS


def test_layerwise_rates_change_the_sharded_run(runs):
    """Guards the /layerwise case above: the kernel's multiplier reaches both its shards."""
    assert cases.ulps(runs["sharded/layerwise"]["kernel"][0], runs["sharded"]["kernel"][0]) > 1000 * ULPS


def test_shards_were_trained(runs):
    start, _, _ = cases.sharded_problem()
    for name, value in start.items():
        assert not np.allclose(runs["sharded"][name][0], value, rtol=1e-3)
