"""A provider as a plain record with the fields ``broker.registry.Provider`` names, for tests
and benchmarks of the registry's picking without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ProviderRecord"]


@dataclass(eq=False)
class ProviderRecord:
    instance: str
    outstanding: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    weight: int = 1
    lease_enabled: bool = False
    lease_remaining: int = 0
    lease_expires: float = 0.0
    is_remote: bool = False
    available: bool = True
    failures: int = 0
    rtt: float = 0.0
    rtt_at: float = 0.0
    measure_rtt: bool = False

    @property
    def balance_load(self) -> int:
        return self.outstanding

    @property
    def target(self) -> "ProviderRecord":
        """Where a request picked for it goes: itself, as a local connection's."""
        return self
