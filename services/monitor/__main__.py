"""`python -m modm.services.monitor`: a monitor configured from MODM_MONITOR_* env vars (containers)."""

from modm.services.monitor.server import main
from modm.services.monitor.settings import MonitorSettings

if __name__ == "__main__":
    main(MonitorSettings.load())
