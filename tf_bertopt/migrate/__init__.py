"""TF1 migration: read TF1 BERT checkpoints and import their optimizer state.

``load_tf1_optimizer_state`` (in ``state_import``) puts a TF1 checkpoint's
slots and ``global_step`` into a tf_bertopt optimizer; ``TF1Checkpoint`` (in
``tf1_checkpoint``) reads what such a checkpoint holds;
``write_tf1_example_checkpoint`` (in ``tf1_example``) writes a small one to
try them on.
"""

from tf_bertopt.migrate.state_import import (
    ImportReport,
    NameMap,
    Problem,
    RenameRules,
    load_tf1_optimizer_state,
    rename_rules,
)
from tf_bertopt.migrate.tf1_checkpoint import TF1Checkpoint
from tf_bertopt.migrate.tf1_example import write_tf1_example_checkpoint

__all__ = [
    "load_tf1_optimizer_state",
    "rename_rules",
    "RenameRules",
    "ImportReport",
    "Problem",
    "NameMap",
    "TF1Checkpoint",
    "write_tf1_example_checkpoint",
]
