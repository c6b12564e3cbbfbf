#!/usr/bin/env bash
# Fresh virtualenv, the package with its test extras, then the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TF_BERTOPT_CI_VENV:-.venv-ci}"
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -c ci/constraints.txt -e ".[test]"
python -c "import tensorflow as tf, keras, keras_hub, tf_keras, tf_bertopt; print('tensorflow', tf.__version__, '| keras', keras.__version__, '| tf_keras', tf_keras.__version__, '| keras_hub', keras_hub.__version__, '| tf_bertopt', tf_bertopt.__version__)"

# The README's test command:
python -m pytest
