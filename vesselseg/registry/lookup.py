"""Reading the MLflow Model Registry: a registered model, a version by alias or number, the
aliases of a model and the metric a version was registered with.

``client`` is an ``MlflowClient`` (:func:`vesselseg.tracking.client`); mlflow is imported
inside functions only.
"""

from __future__ import annotations

from typing import Any

from vesselseg.errors import VesselsegError


class RegistryError(VesselsegError):
    """A registry URI, registered model, version or alias that cannot be used."""


def registered_model(client: Any, name: str, uri: str) -> Any:
    """The registered model ``name``, or a one-line error listing the registered names."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        known = ", ".join(names) if names else "none"
        raise RegistryError(f"{uri}: no registered model {name!r} (registered: {known})") from None


def model_aliases(model: Any) -> dict[str, str]:
    """``{alias: version}`` of a registered model (MLflow gives a dict or alias objects)."""
    aliases = getattr(model, "aliases", None) or {}
    if isinstance(aliases, dict):
        return {str(k): str(v) for k, v in aliases.items()}
    return {str(a.alias): str(a.version) for a in aliases}


def registered_version(client: Any, uri: str, name: str, ref: str, by_alias: bool) -> Any:
    """Version ``ref`` of ``name``: an alias (``by_alias``), a number or ``latest``."""
    from mlflow.exceptions import MlflowException

    model = registered_model(client, name, uri)
    if not by_alias and ref == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise RegistryError(f"{uri}: {name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        if by_alias:
            return client.get_model_version_by_alias(name, ref)
        return client.get_model_version(name, ref)
    except MlflowException:
        if by_alias:
            aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(model_aliases(model).items()))
            raise RegistryError(
                f"{uri}: {name!r} has no alias {ref!r} (aliases: {aliases or 'none'})"
            ) from None
        raise RegistryError(f"{uri}: {name!r} has no version {ref!r}") from None


def version_metric(version: Any, metric: str) -> float | None:
    """The ``metric`` of a registered version, from its tags (``metric_value`` when it was
    registered by that metric, else ``metrics.<metric>``); None when it has none."""
    tags = version.tags or {}
    text = tags.get("metric_value") if tags.get("metric_name") == metric else None
    text = text if text is not None else tags.get(f"metrics.{metric}")
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
