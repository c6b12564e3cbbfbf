"""Each algorithm's flavour-neutral Keras face: signature, documentation, options.

One module per algorithm. A front end (``tf_bertopt.keras3``,
``tf_bertopt.tf_keras``) combines the mixin with its optimizer base, itself
built on ``tf_bertopt.front_end.BertOptimizerMixin``; the math is
``tf_bertopt.update_rules`` (and, with ``fused=True``,
``tf_bertopt.fused_updates``).
"""
