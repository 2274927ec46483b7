"""The router: the public API; cache lookup, hit/miss planning, per-pool queues and dispatch."""
