"""A longer fuzzing campaign over the same properties as tests/unit/core/test_fuzz_core.py and
tests/contract/test_fuzz_grpc.py.

    python -m tools.fuzz --minutes 10

Runs, round after round until the time is up, each property with fresh random examples:
the decision core on generated requests, structured tokens and mutated tokens
(tests/unit/core/test_fuzz_core.py), and the whole gRPC Check handler on odd and byte-mutated
CheckRequests sent to two real loopback servers (tests/contract/test_fuzz_grpc.py). Stops at the
first failing property (hypothesis prints the shrunk example) and exits 1; otherwise prints
how many examples each property ran and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.contract import test_fuzz_grpc
from tests.unit.core import test_fuzz_core

Property = Callable[[Any], None]


def _counted(prop: Property, counts: Counter[str], name: str) -> Property:
    def run(example: Any) -> None:
        counts[name] += 1
        prop(example)

    return run


def _round(name: str, strategy: st.SearchStrategy[Any], prop: Property, examples: int,
           counts: Counter[str]) -> None:
    # A fresh function per round: hypothesis refuses to re-decorate one with settings.
    test = given(strategy)(settings(
        max_examples=examples, deadline=None, database=None,
        phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
    )(_counted(prop, counts, name)))
    test()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the campaign; the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget")
    parser.add_argument("--round", type=int, default=500, metavar="N",
                        help="examples per property per round")
    args = parser.parse_args(argv)
    # The handler logs every request that does not parse; a campaign makes millions.
    logging.disable(logging.ERROR)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    with test_fuzz_grpc.check_servers() as servers:
        grpc_property = test_fuzz_grpc.campaign_property(servers)
        campaign: dict[str, tuple[st.SearchStrategy[Any], Property]] = {
            **test_fuzz_core.CAMPAIGN,
            "grpc.odd_requests": (test_fuzz_grpc.check_requests(), grpc_property),
            "grpc.mutated_requests": (test_fuzz_grpc.mutated_requests(), grpc_property),
        }
        rounds = 0
        try:
            while time.monotonic() < deadline:
                for name, (strategy, prop) in campaign.items():
                    _round(name, strategy, prop, args.round, counts)
                rounds += 1
        except Exception as failure:
            print(f"FAILED after {sum(counts.values())} examples: {type(failure).__name__}",
                  file=sys.stderr)
            raise
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    print(f"{rounds} rounds, {total} examples in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
          "no failure")
    for name, count in sorted(counts.items()):
        print(f"  {name}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
