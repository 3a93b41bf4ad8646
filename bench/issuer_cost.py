"""In-process Check cost of a never-seen RS256 token (cache miss, one signature check) with
the single JWKS URL, one identity provider, and three (the token from the second): the
selection by `iss` must cost nothing next to the signature.

Run: .venv/bin/python -m bench.issuer_cost [--tokens 400] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

from authz.core.decide import decide
from authz.core.request import RequestView
from authz.core.token_cache import TokenCache
from authz.keys.jwk import parse_jwks
from authz.keys.snapshot import IssuerKeys, KeySnapshot
from authz.settings.model import Settings
from tests.jwks_server import jwk, jwks, rsa_key, sign

ISSUERS = ("https://a.example/", "https://b.example/", "https://c.example/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    keys = [rsa_key(f"bench-issuer-{n}") for n in range(3)]
    sets = [parse_jwks(jwks(jwk(key, "k"))) for key in keys]
    snapshots = {
        "one JWKS URL": KeySnapshot.build(jwks_configured=True, public_keys=sets[1]),
        "one issuer": KeySnapshot.build(
            issuers=(IssuerKeys.build(ISSUERS[1], public_keys=sets[1]),)),
        "three issuers": KeySnapshot.build(issuers=tuple(
            IssuerKeys.build(issuer, public_keys=key_set)
            for issuer, key_set in zip(ISSUERS, sets, strict=True))),
    }
    settings = Settings(jwks_url="https://a.example/jwks")
    now = time.time()
    views = [
        RequestView(authorization="Bearer " + sign(
            "RS256", keys[1], {"sub": "u", "iss": ISSUERS[1], "exp": now + 600, "jti": str(n)},
            "k"), source_ip="127.0.0.1")
        for n in range(args.tokens)
    ]
    for name, snapshot in snapshots.items():
        runs = []
        for _ in range(args.runs):
            cache = TokenCache(100_000)  # every token unseen: a miss and a put each
            started = time.perf_counter()
            for view in views:
                decision = decide(view, snapshot, settings, now, cache)
            runs.append((time.perf_counter() - started) / len(views) * 1e6)
            assert decision.allowed, decision.reason
        print(f"{name:14s} median {statistics.median(runs):6.1f} us per Check "
              f"({len(views)} tokens x {args.runs} runs)")


if __name__ == "__main__":
    main()
