"""How soon each eviction policy lets new topics into the cache after old ones were popular.

Replays `modm.services.cache.replay.DriftTrace` (old topics asked for many times, then as many
new ones) through the cache engine on in-memory stores, once per policy, and prints the new
topics' hit rate per window of requests and the request from which on each policy hits at
least as often as FIFO. LCBFU is shown without grace and aging (it never turns over) and with
the defaults `modm cache` uses (grace a tenth of the capacity, half-life the capacity).

    python benchmarks/cache_turnover.py                      # capacity 40, 30 + 30 topics
    python benchmarks/cache_turnover.py --capacity 200 --topics 150 --requests 6000

Exact and seeded: the same arguments print the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio

from modm.services.cache.policies import EvictionPolicy, FifoPolicy, LcbfuPolicy, LruPolicy, lcbfu_defaults
from modm.services.cache.replay import DriftTrace, ReplayResult, replay


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=40, help="max entries")
    parser.add_argument("--topics", type=int, default=30, help="old topics, and as many new ones")
    parser.add_argument("--requests", type=int, default=1500, help="requests per phase")
    parser.add_argument("--windows", type=int, default=10, help="windows the new phase is reported in")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    trace = DriftTrace(args.topics, args.requests, args.requests, args.seed)
    grace, half_life = lcbfu_defaults(args.capacity)
    policies: list[EvictionPolicy] = [FifoPolicy(), LruPolicy(), LcbfuPolicy(), LcbfuPolicy(grace, half_life)]
    results: list[ReplayResult] = [await replay(p, args.capacity, trace) for p in policies]
    width = max(1, args.requests // args.windows)
    print(f"capacity {args.capacity}, {args.topics} old then {args.topics} new topics, {args.requests} requests each")
    print(f"new topics' hit rate per {width} requests; 'from' = request from which on it hits as often as FIFO")
    for result in results:
        windows = " ".join(f"{result.hit_rate(i, i + width):.2f}" for i in range(0, args.requests, width))
        caught = result.catches_up_with(results[0])
        since = "never" if caught is None else str(caught)
        print(f"{result.policy:60} all {result.hit_rate():.3f}  from {since:>5}  {windows}")


if __name__ == "__main__":
    asyncio.run(main())
