import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

import harness  # noqa: E402


@pytest.fixture(params=harness.FLAVOURS)
def flavour(request):
    """Runs a test once per Keras flavour: "keras3" and "tf_keras"."""
    return request.param
