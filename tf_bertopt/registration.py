"""tf_bertopt's classes registered with Keras once Keras is imported, whatever the order.

Keras loads a saved optimizer or schedule only if its class was registered
(``keras.saving.register_keras_serializable``) before ``load_model``; the
front ends (``tf_bertopt.keras3``, ``tf_bertopt.tf_keras``) register theirs
when imported. ``import tf_bertopt`` imports neither Keras nor TensorFlow,
yet ``import tf_bertopt`` followed by ``keras.models.load_model(path)`` has
to work. So ``register_front_ends()`` imports the front end of each Keras
library already imported, and for the others waits: when ``keras`` or
``tf_keras`` is imported later, its front end is imported right after it.

That import may itself come from inside one of ours: ``from tf_bertopt
import tf_keras`` imports TensorFlow (which imports Keras) halfway through
its own modules. A front end imported then would find those modules half
made, so it waits until our outermost module being imported is complete.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

_PACKAGE = "tf_bertopt"
FRONT_ENDS = {"keras": "tf_bertopt.keras3", "tf_keras": "tf_bertopt.tf_keras"}


class _FrontEndAfterImport(importlib.abc.MetaPathFinder):
    """Finds ``keras`` / ``tf_keras`` as usual and imports the matching front end after it.

    TensorFlow may import Keras while it is itself being imported; the front
    ends need all of TensorFlow, so they then wait until its import ends.
    """

    def __init__(self, waiting: dict[str, str]):
        self.waiting = dict(waiting)
        self.after_tensorflow: list[str] = []
        self.after_ours: list[str] = []
        self.ours_being_imported = 0

    def find_spec(self, fullname, path, target=None):
        ours = fullname.startswith(_PACKAGE + ".")
        if fullname not in self.waiting and fullname != "tensorflow" and not ours:
            return None
        # Asked without importing too (importlib.util.find_spec): act once the module is executed.
        spec = _spec_from_other_finders(self, fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            self.ours_being_imported += ours
            try:
                execute(module)
            finally:
                self.ours_being_imported -= ours
            self._imported(fullname)

        spec.loader.exec_module = exec_module
        return spec

    def _imported(self, fullname: str) -> None:
        if fullname == "tensorflow":
            front_ends, self.after_tensorflow = self.after_tensorflow, []
        elif fullname.startswith(_PACKAGE + "."):
            front_ends, self.after_ours = (self.after_ours, []) if not self.ours_being_imported else ([], self.after_ours)
        else:
            front_ends = [self.waiting.pop(fullname)] if fullname in self.waiting else []
            if front_ends and _being_imported("tensorflow"):
                self.after_tensorflow += front_ends
                return
        if front_ends and self.ours_being_imported:
            self.after_ours += front_ends
            return
        if not (self.waiting or self.after_tensorflow or self.after_ours) and self in sys.meta_path:
            sys.meta_path.remove(self)
        for front_end in front_ends:
            importlib.import_module(front_end)


def _being_imported(name: str) -> bool:
    module = sys.modules.get(name)
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _spec_from_other_finders(skipped, fullname, path, target):
    for finder in sys.meta_path:
        if finder is not skipped and hasattr(finder, "find_spec"):
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
    return None


def register_front_ends() -> None:
    """Imports the front end of each Keras library imported; the others follow their library's import."""
    waiting = {}
    for library, front_end in FRONT_ENDS.items():
        if library in sys.modules:
            importlib.import_module(front_end)
        else:
            waiting[library] = front_end
    if waiting and not any(isinstance(finder, _FrontEndAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FrontEndAfterImport(waiting))
