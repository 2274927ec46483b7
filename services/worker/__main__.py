"""`python -m modm.services.worker`: a worker configured from MODM_WORKER_* env vars (containers)."""

from modm.services.worker.server import main
from modm.services.worker.settings import WorkerSettings

if __name__ == "__main__":
    main(WorkerSettings.load())
