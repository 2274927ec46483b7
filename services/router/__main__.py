"""`python -m modm.services.router`: a router configured from MODM_ROUTER_* env vars (containers)."""

from modm.services.router.server import main
from modm.services.router.settings import RouterSettings

if __name__ == "__main__":
    main(RouterSettings.load())
