"""Which pool an invocation of an endpoint goes to: by TargetVariant, else by variant weight."""

from __future__ import annotations

import random
from dataclasses import dataclass

from coldbrew.capture.config import CaptureConfig
from coldbrew.errors import ValidationError
from coldbrew.serving.targets import AsyncConfig


@dataclass(frozen=True)
class RoutedVariant:
    name: str
    pool: int
    """The scaling core's pool id."""
    weight: float
    serverless: bool
    memory_mb: int


@dataclass
class LiveEndpoint:
    """An endpoint as it serves now: its variants and the pools that run them."""

    name: str
    variants: dict[str, RoutedVariant]
    fingerprint: str
    """Identifies what the pools run; a deploy with the same fingerprint only reconfigures them."""
    asynchronous: AsyncConfig | None = None
    """Set for an asynchronous endpoint: it takes InvokeEndpointAsync, not InvokeEndpoint."""
    capture: CaptureConfig | None = None
    """Its DataCaptureConfig: swapped with the variants, so an UpdateEndpoint turns capture on or
    off in the same assignment that starts routing to the new pools."""

    def choose(self, target_variant: str | None) -> RoutedVariant:
        if target_variant is not None:
            variant = self.variants.get(target_variant)
            if variant is None:
                raise ValidationError(
                    f"The variant {target_variant} is not present in endpoint {self.name}; "
                    f"its variants are {', '.join(sorted(self.variants))}."
                )
            return variant
        weighted = [v for v in self.variants.values() if v.weight > 0]
        if len(weighted) == 1:
            return weighted[0]
        return random.choices(weighted, weights=[v.weight for v in weighted])[0]
