"""The key sources of one process: the single AUTHZ_JWKS_URL, or one JWKSSource per
identity provider (SPEC section 10), each refreshed, backed off and refetched on its own.

`/readyz` waits for all of them; a Check waits only for the source its token's issuer
selected, so a provider that is down never holds up the others' Checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from authz.keys.jwks_source import JWKSSource
from authz.keys.store import IssuerSettings, KeyStore

__all__ = ["KeySources", "SourceSettings", "key_sources"]


class SourceSettings(Protocol):
    """What the key sources read of the settings (`authz.settings.model.Settings` is one)."""

    @property
    def jwks_url(self) -> str | None: ...

    @property
    def issuer(self) -> str | None: ...

    @property
    def issuers(self) -> Sequence[IssuerSettings]: ...

    @property
    def jwks_refresh_seconds(self) -> float: ...

    @property
    def jwks_ca_file(self) -> str | None: ...


class KeySources:
    """Every JWKS source, by the issuer it serves (None: the single AUTHZ_JWKS_URL)."""

    def __init__(self, sources: dict[str | None, JWKSSource]) -> None:
        self.sources = sources

    @property
    def ready(self) -> bool:
        """Every source has loaded a key set once."""
        return all(source.ready for source in self.sources.values())

    def start(self) -> None:
        """Start every source's first fetch and refresh cycle in the running loop."""
        for source in self.sources.values():
            source.start()

    async def stop(self) -> None:
        """Stop every source."""
        await asyncio.gather(*(source.stop() for source in self.sources.values()))

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every source's first key set."""
        results = await asyncio.gather(
            *(source.wait_ready(timeout) for source in self.sources.values())
        )
        return all(results)

    async def refresh_unknown_kid(self, timeout: float, issuer: str | None = None) -> None:
        """The unknown-kid refetch of the source of `issuer` (None: the single JWKS), with
        that source's single flight and rate limit; no other source is touched."""
        source = self.sources.get(issuer)
        if source is not None:
            await source.refresh_unknown_kid(timeout)


def key_sources(settings: SourceSettings, store: KeyStore) -> KeySources | None:
    """The sources the settings name, filling `store`; None when there is none (secrets
    only). Each identity provider without a `jwks_url` is found by OIDC discovery."""
    sources: dict[str | None, JWKSSource] = {}
    period, ca_file = settings.jwks_refresh_seconds, settings.jwks_ca_file
    if settings.jwks_url is not None:
        sources[None] = JWKSSource(
            settings.jwks_url, store, refresh_seconds=period, ca_file=ca_file,
            label=settings.issuer or "",
        )
    for provider in settings.issuers:
        sources[provider.issuer] = JWKSSource(
            provider.jwks_url or provider.issuer,
            store,
            refresh_seconds=period,
            ca_file=ca_file,
            issuer=provider.issuer,
            discovery=provider.jwks_url is None,
        )
    return KeySources(sources) if sources else None
