"""`python -m modm.services.cache`: a cache configured from MODM_CACHE_* env vars (containers)."""

from modm.services.cache.server import main
from modm.services.cache.settings import CacheSettings

if __name__ == "__main__":
    main(CacheSettings.load())
