"""Property tests over the constructors' whole argument space (hypothesis).

* Every accepted set of arguments gives a config that round-trips exactly:
  ``from_config(get_config())`` has the same ``get_config()``.
* Every set with one bad argument is refused with a ``ValueError`` that names it.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness

FLAVOURS = harness.FLAVOURS
KINDS = ["AdamWeightDecay", "LAMB"]
FLOAT32_MAX = 3.4028234663852886e38
# TF_BERTOPT_SOAK=1 tries ten times as many examples.
EXAMPLES = 300 if os.environ.get("TF_BERTOPT_SOAK") == "1" else 30
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

rates = st.one_of(st.just(0.0), st.floats(1e-30, 1e30), st.floats(1e-44, FLOAT32_MAX))
positives = st.one_of(st.floats(1e-30, 1e30), st.floats(1e-44, FLOAT32_MAX))
betas = st.floats(0.0, 1.0, exclude_max=True)
step_counts = st.integers(1, 2**63 - 1)
patterns = st.lists(
    st.one_of(
        st.sampled_from(["LayerNorm", "layer_norm", "bias", r"^encoder/layer_\d+/", "kernel$", "(?i)gamma", "[ab]+c?"]),
        st.text("abcdefghijklmnopqrstuvwxyz_/0123456789", min_size=1, max_size=12),
    ),
    max_size=4,
)
optional_patterns = st.one_of(st.none(), patterns)
bounds = st.one_of(
    st.none(),
    st.tuples(st.one_of(st.none(), st.floats(0, 10)), st.one_of(st.none(), st.floats(10, 1e6))),
)


@st.composite
def schedules(draw, flavour):
    api = harness.front_end(flavour)
    decay_start = draw(st.sampled_from(["step_0", "warmup_end"]))
    decay_steps = draw(st.integers(2, 2**63 - 1) if decay_start == "warmup_end" else step_counts)
    # "warmup_end" decays from warmup_steps to decay_steps, so it needs warmup_steps < decay_steps.
    warmup_limit = decay_steps - 1 if decay_start == "warmup_end" else 2**63 - 1
    return api.WarmupPolynomialDecay(
        initial_learning_rate=draw(rates),
        decay_steps=decay_steps,
        warmup_steps=draw(st.integers(0, warmup_limit)),
        end_learning_rate=draw(rates),
        power=draw(positives),
        cycle=draw(st.booleans()),
        decay_start=decay_start,
        warmup_power=draw(positives),
        warmup_initial_learning_rate=draw(rates),
    )


@st.composite
def accepted_arguments(draw, flavour, kind):
    arguments = dict(
        learning_rate=draw(st.one_of(rates, schedules(flavour))),
        weight_decay_rate=draw(rates),
        beta_1=draw(betas),
        beta_2=draw(betas),
        epsilon=draw(positives),
        exclude_from_weight_decay=draw(optional_patterns),
        include_in_weight_decay=draw(optional_patterns),
        fused=draw(st.booleans()),
        skip_nonfinite_steps=draw(st.booleans()),
        use_ema=draw(st.booleans()),
        ema_momentum=draw(st.floats(0.0, 1.0)),
        ema_overwrite_frequency=draw(st.one_of(st.none(), step_counts)),
        name=draw(st.text("ABCabc_0123456789", min_size=1, max_size=10)),
    )
    clip = draw(st.sampled_from([None, "clipnorm", "clipvalue", "global_clipnorm"]))
    if clip:
        arguments[clip] = draw(positives)
    if kind == "LAMB":
        arguments.update(
            exclude_from_layer_adaptation=draw(optional_patterns),
            bias_correction=draw(st.booleans()),
            weight_norm_bounds=draw(bounds),
            trust_ratio_bounds=draw(bounds),
        )
    if flavour == "keras3":
        arguments["gradient_accumulation_steps"] = draw(st.one_of(st.none(), st.integers(2, 2**63 - 1)))
        arguments["loss_scale_factor"] = draw(st.one_of(st.none(), positives))
    else:
        arguments["jit_compile"] = draw(st.booleans())
    return arguments


def not_float32(value):
    return isinstance(value, float) and (abs(value) > FLOAT32_MAX or 0 < abs(value) < 1.4e-45)


# Per argument, values it must refuse.
numbers_refused = st.one_of(
    st.floats(max_value=-1e-30), st.just(math.nan), st.just(math.inf), st.just(1e39), st.just(1e-300),
    st.text(max_size=3), st.just([0.1]), st.just(True),
)
REFUSED = {
    "learning_rate": numbers_refused,
    "weight_decay_rate": numbers_refused,
    "epsilon": st.one_of(numbers_refused, st.just(0.0)),
    "beta_1": st.one_of(st.floats(1.0, 1e9), st.floats(max_value=-1e-9), st.just(math.nan), st.text(max_size=2)),
    "beta_2": st.one_of(st.floats(1.0, 1e9), st.floats(max_value=-1e-9), st.just(math.nan)),
    "exclude_from_weight_decay": st.one_of(
        st.integers(), st.lists(st.integers(), min_size=1, max_size=2),
        st.sampled_from([["(?=x)"], ["(?<!x)y"], ["(a)\\1"], ["("], ["[z-a]"], ["x\\Z"]]),
    ),
    "include_in_weight_decay": st.sampled_from([["(?!x)"], [None], 3.5, ["a{2,1}"]]),
    "fused": st.one_of(st.integers(), st.text(max_size=4), st.none()),
    "skip_nonfinite_steps": st.one_of(st.integers(), st.text(max_size=4), st.none()),
    "use_ema": st.one_of(st.integers(), st.text(max_size=4)),
    "ema_momentum": st.one_of(st.floats(1.0, 1e9, exclude_min=True), st.floats(max_value=-1e-9), st.just(math.nan)),
    "ema_overwrite_frequency": st.one_of(st.integers(max_value=0), st.integers(2**63, 2**80), st.just(1.5)),
    "clipnorm": st.one_of(st.floats(max_value=0.0), st.just(math.inf)),
    "global_clipnorm": st.one_of(st.floats(max_value=0.0), st.just(math.nan)),
    "name": st.one_of(st.integers(), st.just("a/b")),
}
LAMB_REFUSED = {
    "exclude_from_layer_adaptation": st.sampled_from([["(?=x)"], [1], "(?<=a)b"]),
    "bias_correction": st.one_of(st.integers(), st.text(max_size=3)),
    "weight_norm_bounds": st.one_of(st.just((2.0, 1.0)), st.just((-1.0, None)), st.just((None, 1e39)), st.just((1.0,))),
    "trust_ratio_bounds": st.one_of(st.just((5.0, 0.5)), st.just((None, math.nan)), st.just("1,2")),
}
KERAS3_REFUSED = {
    "gradient_accumulation_steps": st.one_of(st.integers(max_value=1), st.integers(2**63, 2**80), st.just("2")),
    "loss_scale_factor": st.one_of(st.floats(max_value=0.0), st.just(math.inf)),
}
TF_KERAS_REFUSED = {"jit_compile": st.one_of(st.integers(), st.text(max_size=3))}


def refused_for(flavour, kind):
    table = dict(REFUSED)
    table.update(LAMB_REFUSED if kind == "LAMB" else {})
    table.update(KERAS3_REFUSED if flavour == "keras3" else TF_KERAS_REFUSED)
    return table


@st.composite
def one_bad_argument(draw, flavour, kind):
    arguments = draw(accepted_arguments(flavour, kind))
    if draw(st.integers(0, 9)) == 0:  # an unknown key now and then
        key = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12).filter(lambda k: k not in arguments))
        arguments[key] = draw(st.integers())
        return arguments, key
    argument = draw(st.sampled_from(sorted(refused_for(flavour, kind))))
    for clip in ("clipnorm", "clipvalue", "global_clipnorm"):
        arguments.pop(clip, None)  # Keras allows one kind of clipping at a time
    arguments[argument] = draw(refused_for(flavour, kind)[argument])
    return arguments, argument


def optimizer_class(flavour, kind):
    return getattr(harness.front_end(flavour), kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flavour", FLAVOURS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_accepted_config_round_trips_exactly(flavour, kind, data):
    cls = optimizer_class(flavour, kind)
    config = cls(**data.draw(accepted_arguments(flavour, kind))).get_config()
    # deepcopy: Keras's from_config replaces the schedule's dict in the config it is given.
    assert cls.from_config(copy.deepcopy(config)).get_config() == config


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flavour", FLAVOURS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_refused_config_names_the_argument(flavour, kind, data):
    arguments, bad = data.draw(one_bad_argument(flavour, kind))
    with pytest.raises(ValueError) as error:
        optimizer_class(flavour, kind)(**arguments)
    assert bad in str(error.value)


@pytest.mark.parametrize("flavour", FLAVOURS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_accepted_schedule_config_round_trips_exactly(flavour, data):
    schedule = data.draw(schedules(flavour))
    config = schedule.get_config()
    assert type(schedule).from_config(copy.deepcopy(config)).get_config() == config
