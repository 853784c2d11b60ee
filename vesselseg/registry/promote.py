"""The promotion rule of ``vesselseg register``: does a new version become the champion?

A pure function of numbers and names (no MLflow, no files), so the rule is tested on its own:
higher ``register.metric`` is better (every metric ``vesselseg evaluate`` writes is a score in
[0, 1]); a tie keeps the champion; a candidate without the metric is not promoted; ``force``
promotes anyway; the first version of a model is always the champion.
"""

from __future__ import annotations

from dataclasses import dataclass

from vesselseg.config import RegisterConfig


@dataclass(frozen=True)
class Decision:
    """Whether the candidate becomes the champion, and why (one line for the user)."""

    promote: bool
    reason: str


def decide(
    candidate: float | None,
    champion: float | None,
    rule: RegisterConfig,
    champion_version: str | None,
    force: bool = False,
) -> Decision:
    """Promote the candidate (metric value ``candidate``) over the current champion?

    ``champion`` is the champion's value of ``rule.metric`` (None when it has none) and
    ``champion_version`` its version number (None: there is no ``rule.champion_alias`` yet).
    """
    alias, metric = rule.champion_alias, rule.metric
    if champion_version is None:
        return Decision(True, f"no {alias} yet; this version is the {alias}")
    old_text = "n/a" if champion is None else f"{champion:.4f}"
    new_text = "n/a" if candidate is None else f"{candidate:.4f}"
    versus = f"{metric} {new_text} vs {alias} version {champion_version}'s {old_text}"
    if force:
        return Decision(True, f"--force ({versus})")
    if candidate is None:
        return Decision(False, f"no {metric} to compare ({versus}); use --metrics or --force")
    if champion is None or candidate > champion:
        return Decision(True, versus)
    return Decision(False, f"{versus} (must be higher); --force promotes anyway")
