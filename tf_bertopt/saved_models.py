"""Reloading a Keras 3 ``.keras`` model together with the optimizer it was saved with.

``keras.models.load_model`` recompiles a model from the ``compile_config``
in the file and reloads the optimizer's variables, unless the model's class
overrides ``compile()``. keras-hub's tasks do (``BertMaskedLM``,
``BertTextClassifier``, ...): their constructor compiles them with keras-hub's
default ``Adam``, and loading keeps that ``Adam``, warning that ``compile()``
was not called and that the saved optimizer variables were skipped. The
schedule, the weight-decay exclusions, the moments and the step counter are
then lost, although the file holds all of them.

``load_model(path)`` and ``restore_optimizer(model, path)`` bring them back:
the model is compiled with exactly the saved ``compile_config`` (through
``keras.Model.compile``, which wrote it), the optimizer is built on the
model's trainable variables, and every optimizer variable (iteration
counter, slots) is set from the file. Training then continues exactly as it
would have without saving.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from typing import Any

# Keras's warnings when it keeps the model's own optimizer; load_model replaces that optimizer.
_KERAS_SKIP_WARNINGS = (
    r"`compile\(\)` was not called as part of model loading",
    r"Skipping variable loading for optimizer",
)


def load_model(path: str | os.PathLike, *, custom_objects: dict | None = None, safe_mode: bool = True):
    """``keras.models.load_model(path)`` that also restores the saved optimizer.

    For models whose class overrides ``compile()`` (keras-hub tasks, for
    example), ``restore_optimizer`` recompiles the model from the file after
    loading; other models are restored by Keras itself.

    Args:
        path: a Keras 3 ``.keras`` file.
        custom_objects: passed to ``keras.models.load_model`` and used to
            rebuild the optimizer, loss and metrics.
        safe_mode: passed to ``keras.models.load_model``.

    Returns:
        The model, compiled as it was when saved, its optimizer holding the
        saved iteration count and slots.

    Raises:
        ValueError: ``path`` is not a Keras 3 ``.keras`` archive, or its
            optimizer variables do not fit the rebuilt optimizer.
    """
    import keras

    _saved_config(path, "load_model")  # a clear error before Keras's own
    overrides_compile = None
    with warnings.catch_warnings():
        for message in _KERAS_SKIP_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        model = keras.models.load_model(path, custom_objects=custom_objects, safe_mode=safe_mode)
        overrides_compile = type(model).compile is not keras.Model.compile
    if overrides_compile and saved_compile_config(path):
        restore_optimizer(model, path, custom_objects=custom_objects)
    return model


def restore_optimizer(model, path: str | os.PathLike, *, custom_objects: dict | None = None):
    """Compiles ``model`` as saved in ``path`` and loads the saved optimizer variables into it.

    Args:
        model: the Keras 3 model loaded from ``path`` (or one with the same
            trainable variables, in the same order).
        path: the ``.keras`` file the model was saved to, compiled.
        custom_objects: classes the optimizer, loss or metrics need to be
            rebuilt (tf_bertopt's are registered already).

    Returns:
        The restored optimizer (also ``model.optimizer``).

    Raises:
        ValueError: the file holds no compiled optimizer, or its optimizer
            variables do not match the rebuilt optimizer's in number or shape.
    """
    import keras

    import tf_bertopt.keras3  # noqa: F401 - registers tf_bertopt's classes for deserialization

    compile_config = saved_compile_config(path)
    if not compile_config or not compile_config.get("optimizer"):
        raise ValueError(
            f"restore_optimizer: {os.fspath(path)!r} was saved without a compiled optimizer "
            "(its config.json has no compile_config); compile the model yourself."
        )
    config = keras.saving.deserialize_keras_object(compile_config, custom_objects=custom_objects)
    # keras.Model.compile wrote compile_config; a subclass's compile() may add defaults of its own.
    keras.Model.compile(model, **config)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    values = saved_optimizer_variables(path)
    if len(values) != len(optimizer.variables):
        raise ValueError(
            f"restore_optimizer: {os.fspath(path)!r} holds {len(values)} optimizer variables, but "
            f"{type(optimizer).__name__} built on the model's {len(model.trainable_variables)} trainable "
            f"variables has {len(optimizer.variables)}; was `model` loaded from this file?"
        )
    for index, variable in enumerate(optimizer.variables):
        value = values[str(index)]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"restore_optimizer: optimizer variable {index} ({variable.path}) has shape "
                f"{tuple(variable.shape)}, the saved one {tuple(value.shape)}; was `model` loaded from this file?"
            )
        variable.assign(value)
    return optimizer


def saved_compile_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``compile_config`` of a ``.keras`` file (None if it was saved uncompiled)."""
    return _saved_config(path, "saved_compile_config").get("compile_config")


def saved_optimizer_variables(path: str | os.PathLike) -> dict[str, Any]:
    """The optimizer variables in a ``.keras`` file, ``{"0": array, "1": array, ...}`` in build order."""
    import h5py

    with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            raise ValueError(f"{os.fspath(path)!r} holds no model.weights.h5 (saved with another weights format?)")
        data = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as weights:
        group = weights.get("optimizer/vars")
        return {} if group is None else {key: group[key][()] for key in group}


def _saved_config(path: str | os.PathLike, owner: str) -> dict[str, Any]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{owner}: no such file: {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{owner}: {path!r} is not a Keras 3 .keras archive (a zip file).")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "config.json" not in names or "metadata.json" not in names:
            raise ValueError(f"{owner}: {path!r} is a zip file but not a saved Keras model.")
        metadata = json.loads(archive.read("metadata.json"))
        if str(metadata.get("keras_version", "3")).startswith("2."):
            raise ValueError(
                f"{owner}: {path!r} was saved by tf-keras {metadata['keras_version']}; this needs a Keras 3 "
                "file (tf-keras restores its optimizers with tf_keras.models.load_model)."
            )
        return json.loads(archive.read("config.json"))
