"""Every stage description, in the order a trial runs them (inputs before their consumers)."""

from __future__ import annotations

from salient.platform.stages import STAGE_NAMES, aggregator, detector, diffusion, mask_vae, pool, ucmt
from salient.platform.stages.base import Stage

__all__ = ["STAGES", "STAGE_BY_NAME"]

STAGES: tuple[Stage, ...] = (mask_vae.STAGE, diffusion.STAGE, ucmt.STAGE, pool.STAGE, detector.STAGE, aggregator.STAGE)

# One list of names, one list of stages: they must agree.
assert tuple(s.name for s in STAGES) == STAGE_NAMES, "registry and STAGE_NAMES disagree"
STAGE_BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
