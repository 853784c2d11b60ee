"""MLflow Model Registry: register a saved model as a pyfunc, promote it, fetch it back.

* :mod:`~vesselseg.registry.register` — :func:`register_model`: log the pyfunc, register a new
  version with its tags, set the aliases;
* :mod:`~vesselseg.registry.promote` — :func:`decide`: the promotion rule, a pure function
  (no MLflow);
* :mod:`~vesselseg.registry.resolve` — :func:`resolve_model`: ``models:/…`` or ``runs:/…`` → a
  local model file, downloaded once into a cache;
* :mod:`~vesselseg.registry.listing` — :func:`list_models`, :func:`format_models`;
* :mod:`~vesselseg.registry.lookup` — reading registered models, versions and aliases.

mlflow is imported inside functions only, so importing this package is cheap.
"""

from vesselseg.registry.listing import ModelRow, format_models, list_models
from vesselseg.registry.lookup import RegistryError
from vesselseg.registry.promote import Decision, decide
from vesselseg.registry.register import RegisterResult, read_metric, register_model
from vesselseg.registry.resolve import MARKER, default_cache_dir, is_model_uri, resolve_model

__all__ = [
    "MARKER",
    "Decision",
    "ModelRow",
    "RegisterResult",
    "RegistryError",
    "decide",
    "default_cache_dir",
    "format_models",
    "is_model_uri",
    "list_models",
    "read_metric",
    "register_model",
    "resolve_model",
]
