"""The ``tf-bertopt`` command line and the tools behind it (demo, schedule
preview, decay report, TF1 checkpoint inspection, benchmark).

Nothing here is needed by ``import tf_bertopt``.
"""

from tf_bertopt.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
