"""How soon each eviction policy lets new topics into the cache after old ones were popular, and
what LCBFU's grace and aging cost where popularity does not drift.

Replays `modm.services.cache.replay.DriftTrace` (old topics asked for many times, then as many
new ones) through the cache engine on in-memory stores, once per policy, and prints the new
topics' hit rate per window of requests and the request from which on each policy hits at
least as often as FIFO. LCBFU is shown without grace and aging (it never turns over) and with
the defaults `modm cache` uses (`lcbfu_defaults`: grace a tenth of the capacity, half-life the
capacity). Then the same policies on `SkewedTrace` (steady Zipf-like popularity over more
topics than the cache holds): the overall hit rate.

    python benchmarks/cache_turnover.py                      # capacity 40, 30 + 30 topics
    python benchmarks/cache_turnover.py --capacity 200 --topics 150 --requests 6000

Exact and seeded: the same arguments print the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio

from modm.services.cache.policies import EvictionPolicy, FifoPolicy, LcbfuPolicy, LruPolicy, lcbfu_defaults
from modm.services.cache.replay import DriftTrace, SkewedTrace, replay


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=40, help="max entries")
    parser.add_argument("--topics", type=int, default=30, help="drift: old topics, and as many new ones")
    parser.add_argument("--requests", type=int, default=1500, help="drift: requests per phase")
    parser.add_argument("--windows", type=int, default=10, help="windows the new phase is reported in")
    parser.add_argument("--skewed-topics", type=int, default=200)
    parser.add_argument("--skewed-requests", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    policies: list[EvictionPolicy] = [
        FifoPolicy(),
        LruPolicy(),
        LcbfuPolicy(),
        LcbfuPolicy(*lcbfu_defaults(args.capacity)),
    ]
    drift = DriftTrace(args.topics, args.requests, args.requests, args.seed)
    results = [await replay(p, args.capacity, drift) for p in policies]
    width = max(1, args.requests // args.windows)
    print(f"drift: capacity {args.capacity}, {args.topics} old then {args.topics} new topics, {args.requests} each")
    print(f"new topics' hit rate per {width} requests; 'from' = request from which on it hits as often as FIFO")
    for result in results:
        windows = " ".join(f"{result.hit_rate(i, i + width):.2f}" for i in range(0, args.requests, width))
        caught = result.catches_up_with(results[0])
        since = "never" if caught is None else str(caught)
        print(f"{result.policy:60} all {result.hit_rate():.3f}  from {since:>5}  {windows}")

    skewed = SkewedTrace(args.skewed_topics, args.skewed_requests, seed=args.seed)
    print(f"skewed: capacity {args.capacity}, {args.skewed_topics} topics, {args.skewed_requests} requests")
    for policy in policies:
        result = await replay(policy, args.capacity, skewed)
        print(f"{result.policy:60} all {result.hit_rate():.3f}")


if __name__ == "__main__":
    asyncio.run(main())
