"""`modm bench`: replay a request trace against a running stack and measure what the cache buys.

Torch-free: traces (`traces`), arrival schedules (`schedule`), per-request records (`records`),
the replay loop (`replay`), the theoretical bound (`bound`) and the report (`report`). Image
quality (`quality`, CLIP score and FID) imports torch lazily and needs the `eval` extra.
"""
