"""The public names of each namespace, pinned: adding or removing one is a decision, not an accident."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_NAMES = {
    "tf_bertopt": {
        "AdamWeightDecay", "LAMB", "WarmupPolynomialDecay", "create_optimizer", "decay_report",
        "UnmatchedPatternWarning", "load_model", "restore_optimizer", "FLAVOUR", "__version__",
        "ElectraSchedule", "create_electra_optimizer", "OptimizerDiagnostics", "optimizer_diagnostics",
        "write_optimizer_diagnostics",
    },
    "tf_bertopt.keras3": {
        "AdamWeightDecay", "LAMB", "WarmupPolynomialDecay", "create_optimizer",
        "ElectraSchedule", "create_electra_optimizer", "OptimizerDiagnostics",
    },
    "tf_bertopt.tf_keras": {
        "AdamWeightDecay", "LAMB", "WarmupPolynomialDecay", "create_optimizer",
        "ElectraSchedule", "create_electra_optimizer", "OptimizerDiagnostics",
    },
    "tf_bertopt.migrate": {
        "load_tf1_optimizer_state", "rename_rules", "RenameRules", "ImportReport", "Problem", "NameMap",
        "TF1Checkpoint", "write_tf1_example_checkpoint",
    },
}


@pytest.mark.parametrize("module_name", PUBLIC_NAMES)
def test_all_lists_exactly_the_pinned_names(module_name):
    module = importlib.import_module(module_name)
    assert set(module.__all__) == PUBLIC_NAMES[module_name]
    assert len(module.__all__) == len(set(module.__all__))


@pytest.mark.parametrize("module_name", PUBLIC_NAMES)
def test_every_pinned_name_imports(module_name):
    namespace: dict = {}
    exec(f"from {module_name} import {', '.join(sorted(PUBLIC_NAMES[module_name]))}", namespace)
    assert all(namespace[name] is not None for name in PUBLIC_NAMES[module_name])


@pytest.mark.parametrize("module_name", PUBLIC_NAMES)
def test_no_other_public_attribute_besides_submodules(module_name):
    module = importlib.import_module(module_name)
    public = {
        name for name in dir(module)
        if not name.startswith("_") and not inspect.ismodule(getattr(module, name))
    }
    assert public == {name for name in PUBLIC_NAMES[module_name] if not name.startswith("_")}


def test_top_level_classes_are_those_of_the_flavour_tf_keras_is():
    import tf_bertopt

    front_end = importlib.import_module(f"tf_bertopt.{tf_bertopt.FLAVOUR}")
    for name in PUBLIC_NAMES["tf_bertopt.keras3"]:
        assert getattr(tf_bertopt, name) is getattr(front_end, name), name
