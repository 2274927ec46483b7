"""`modm up`: the whole stack on one machine, as separate processes.

With no configuration: the cache service (Milvus Lite + an embedded S3 server, MiniLM embedder;
skipped with a warning if it cannot start), two worker slots (one large and one small worker
serving tiny pipelines built on first use: no GPU, no network), the router on 127.0.0.1:50051,
and the monitor. Logs are streamed with a prefix per service and kept under <data dir>/logs, all
in one format (`--log-format`: text for a terminal, the default, or json; a table's own
`log_format` overrides it for that service); the cache keeps its data under <data dir>/cache, so
the next `modm up` starts with what was cached.

`--workers N` gives N slots (ceil(N/2) start large unless `--large-slots` says how many, the
rest small); on a CPU host each worker runs torch on its share of the cores. The monitor runs on a
thread of this process with the local scaler (`services/monitor/local_scaler.py`): every
`interval_s` (15 s here) it reads the router's Stats, decides the split with its policy, and
switches at most one slot at a time by draining its worker and starting the other model on the
same port; the router learns each slot's pool from the worker's Info (`MODM_ROUTER_WORKERS`).
A thread rather than a `python -m modm.services.monitor` process because the worker processes
are this process's children: one owner starts, tees, watches and stops them, and Ctrl-C stops
the whole tree. A slot keeps the `device` of the table it started with when it switches.

`--emulate N` starts N emulated GPUs instead (`modm worker --device emulated`): each slot a real
worker service on its own port whose pipeline sleeps by a device profile (`--large-profile`,
`--small-profile`), so a fleet of tens of GPUs runs on a laptop. The rest of the stack is the
real one. `--time-scale S` multiplies every time of the stack, not only the profiles' (steps,
overheads, load times), but also the defaults of the router's Stats window and worker discovery
and of the monitor's interval, SLO, assumed load time and speeds, and its policy's horizon, so a
scaled fleet makes the decisions the full-time one would. A [monitor] or [router] table's values
are taken as given.

A TOML config file switches to real models; each table's keys are that service's settings
(the MODM_<SERVICE>_* variables without the prefix, in lower case). For example, SD3.5-Large
as the large model and SDXL as the small one, one GPU each, CLIP ViT-L/14 for the cache:

    [large]
    model = "stabilityai/stable-diffusion-3.5-large"
    device = "cuda:0"

    [small]
    model = "stabilityai/stable-diffusion-xl-base-1.0"
    device = "cuda:1"

    [cache]
    embedder = "open_clip"
    device = "cuda:1"

    [router]
    port = 50051
    insert_hits = false

    [monitor]
    policy = "slo-aware"
    interval_s = 15
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Protocol

import typer

from modm.logs import LogFormat

if TYPE_CHECKING:
    from modm.launch import ServiceProcess
    from modm.services.monitor.local_scaler import LocalScaler, Role, WorkerSlot
    from modm.services.monitor.policy import Policy
    from modm.services.monitor.settings import MonitorSettings

ROUTER_PORT = 50051
HTTP_PORT = 8000
TABLES = ("large", "small", "cache", "router", "monitor")
LOCAL_MONITOR = {"interval_s": 15.0}  # the monitor's defaults here (a table [monitor] overrides them)
# The monitor's settings that are times (a window, a target, a duration, a speed): `--time-scale`
# scales their defaults. degrade_ttl_s follows interval_s by itself (3 x interval_s).
MONITOR_TIMES = ("interval_s", "slo_seconds", "switch_seconds", "large_seconds_per_step", "small_seconds_per_step")
ROUTER_WINDOW_S = 60.0  # Stats over the last minute: the local monitor decides every 15 s
ROUTER_DISCOVERY_S = 2.0  # the router's default: how soon a switched slot is seen in its new pool
# Scaled discovery stops here: every round sends each worker an Info call, N of them.
MIN_DISCOVERY_S = 0.5
DEFAULT_LARGE_PROFILE = "sd3.5-large-a100"
DEFAULT_SMALL_PROFILE = "sdxl-a100"


@dataclass(frozen=True)
class Emulation:
    """Every slot an emulated GPU serving these profiles, every time of the stack scaled."""

    large_profile: str = DEFAULT_LARGE_PROFILE
    small_profile: str = DEFAULT_SMALL_PROFILE
    time_scale: float = 1.0

    def worker_env(self, role: str) -> dict[str, str]:
        profile = self.large_profile if role == "large" else self.small_profile
        env = {"MODM_WORKER_DEVICE": "emulated", "MODM_WORKER_PROFILE": profile}
        return env | {"MODM_WORKER_TIME_SCALE": str(self.time_scale)}


@dataclass
class Member:
    name: str
    module: str
    env: dict[str, str]
    port: int
    optional: bool = False
    roles: dict[str, dict[str, str]] = field(default_factory=dict)  # a worker slot: its env per role


def _env(prefix: str, table: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in table.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if isinstance(value, list):
            text = ",".join(map(str, value))
        out[f"{prefix}{key.upper()}"] = text
    return out


def plan_stack(
    config: dict[str, Any],
    *,
    home: Path,
    host: str,
    port: int,
    large_model: str,
    small_model: str,
    with_cache: bool,
    ports: Any,
    workers: int = 2,
    large_slots: int | None = None,
    http_port: int = 0,
    cores: int = 1,
    log_format: LogFormat = "text",
    emulation: Emulation | None = None,
) -> list[Member]:
    """The processes to start, in start order (cache, worker slots, router).

    `large_slots` slots start large (default ceil(workers / 2)), the rest small. Each worker may
    run torch on `cores // workers` threads unless its table sets torch_threads: the slots stand
    for GPUs, so on a CPU host each gets its own share of the cores instead of all of them.
    CPU workers also default to batches of one image. With `emulation` the slots are emulated
    GPUs (the models are unused) and the router's times are scaled.
    """
    members: list[Member] = []
    cache_port = ports()
    if with_cache:
        env = {"MODM_CACHE_DATA_DIR": str(home / "cache"), "MODM_CACHE_LOG_FORMAT": log_format}
        env |= _env("MODM_CACHE_", config.get("cache", {}))
        env |= {"MODM_CACHE_HOST": "127.0.0.1", "MODM_CACHE_PORT": str(cache_port)}
        members.append(Member("cache", "modm.services.cache", env, cache_port, optional=True))
    models = {"large": large_model, "small": small_model}
    slots = []
    large = (workers + 1) // 2 if large_slots is None else large_slots
    threads = str(max(1, cores // workers))
    for index in range(workers):
        first = "large" if index < large else "small"
        worker_port = ports()
        roles = {}
        # Batching buys nothing on a CPU (a batch of 4 tiny SD3 images took as long as 4 single
        # ones) and makes every image in it wait for the slowest: one image at a time there.
        on_cpu = emulation is None and config.get(first, {}).get("device", "cpu") == "cpu"
        for role, model in models.items():
            env = {"MODM_WORKER_LOG_FORMAT": log_format}
            if emulation is None:
                env |= {"MODM_WORKER_MODEL": model, "MODM_WORKER_TORCH_THREADS": threads}
            else:
                env |= emulation.worker_env(role)
            env |= {"MODM_WORKER_MAX_BATCH_SIZE": "1"} if on_cpu else {}
            env |= _env("MODM_WORKER_", config.get(role, {}))
            env |= _env("MODM_WORKER_", {k: v for k, v in config.get(first, {}).items() if k == "device"})
            env |= {"MODM_WORKER_ROLE": role, "MODM_WORKER_HOST": "127.0.0.1", "MODM_WORKER_PORT": str(worker_port)}
            roles[role] = env
        slots.append(Member(f"slot{index}", "modm.services.worker", roles[first], worker_port, roles=roles))
    members += slots
    router_env = {"MODM_ROUTER_LOG_FORMAT": log_format, "MODM_ROUTER_HOST": host, "MODM_ROUTER_PORT": str(port)}
    router_env["MODM_ROUTER_HTTP_PORT"] = str(http_port)  # the OpenAI-compatible API; 0 = off
    scale = emulation.time_scale if emulation is not None else 1.0
    router_env["MODM_ROUTER_WINDOW_S"] = str(ROUTER_WINDOW_S * scale)
    if emulation is not None:
        discovery = max(MIN_DISCOVERY_S, ROUTER_DISCOVERY_S * scale)
        router_env["MODM_ROUTER_DISCOVERY_INTERVAL_S"] = str(discovery)
    router_env |= _env("MODM_ROUTER_", config.get("router", {}))
    router_env |= {"MODM_ROUTER_WORKERS": ",".join(f"127.0.0.1:{m.port}" for m in slots)}  # pools from Info
    router_port = int(router_env["MODM_ROUTER_PORT"])
    members.append(Member("router", "modm.services.router", router_env, router_port))
    return members


def plan_monitor(config: dict[str, Any], *, router_port: int, workers: int, time_scale: float = 1.0) -> MonitorSettings:
    """The in-process monitor's settings: local defaults (its times scaled by `time_scale`), then
    the [monitor] table; it scales the slots and reads the local router (with the router's own
    token when it requires one)."""
    from modm.services.monitor.settings import MonitorSettings

    defaults = {name: LOCAL_MONITOR.get(name, MonitorSettings.model_fields[name].default) for name in MONITOR_TIMES}
    table: dict[str, Any] = {name: value * time_scale for name, value in defaults.items()}
    table |= config.get("monitor", {})
    tokens = config.get("router", {}).get("tokens_file")
    if tokens and "router_token_file" not in table:
        table["router_token_file"] = tokens
    table |= {"scaler": "local", "routers": [f"127.0.0.1:{router_port}"], "total_gpus": workers}
    return MonitorSettings(**table)


def scaled_policy(name: str, time_scale: float) -> Policy:
    """The monitor's policy by name, its horizon (the default policy's only time) scaled."""
    from modm.services.monitor.policy import SloAwarePolicy, policy_named

    policy = policy_named(name)
    if isinstance(policy, SloAwarePolicy):
        return replace(policy, horizon_s=policy.horizon_s * time_scale)
    return policy


class Running(Protocol):
    def problem(self) -> str | None: ...

    def stop(self) -> str: ...


@dataclass
class _Process:
    name: str
    process: ServiceProcess

    def problem(self) -> str | None:
        code = self.process.proc.poll()
        return None if code is None else f"{self.name} exited with {code}"

    def stop(self) -> str:
        return str(self.process.stop(signal.SIGTERM, timeout=60))


class Stack:
    """Starts members, tees their output with a prefix, stops them in reverse order."""

    def __init__(self, log_dir: Path, out: IO[str]) -> None:
        self.log_dir = log_dir
        self.out = out
        self.running: list[tuple[str, Running]] = []
        self._lock = threading.Lock()

    def launch(self, name: str, module: str, env: dict[str, str], port: int) -> ServiceProcess:
        """A process whose output is teed under `name`; not watched (see `start`)."""
        from modm.launch import start_module

        log_path = self.log_dir / f"{name}.log"
        proc = start_module(module, env, log_path, port, stdout=subprocess.PIPE)
        threading.Thread(target=self._tee, args=(name, proc.proc, log_path), daemon=True).start()
        return proc

    def start(self, member: Member) -> ServiceProcess:
        proc = self.launch(member.name, member.module, member.env, member.port)
        self.running.append((member.name, _Process(member.name, proc)))
        return proc

    def _tee(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        assert proc.stdout is not None
        with log_path.open("ab") as log:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                self.line(name, raw.decode(errors="replace").rstrip())

    def line(self, name: str, text: str) -> None:
        with self._lock:
            self.out.write(f"[{name:6}] {text}\n")
            self.out.flush()

    def say(self, text: str) -> None:
        self.line("modm", text)

    def exited(self) -> str | None:
        for _, running in self.running:
            problem = running.problem()
            if problem is not None:
                return problem
        return None

    def stop(self) -> None:
        for name, running in reversed(self.running):
            self.say(f"{name} stopped ({running.stop()})")
        self.running.clear()


class _StackLog(logging.Handler):
    """The in-process monitor's log, in the stack's format (the reason is a field): in
    <logs>/monitor.log, and on the terminal too except the every-round decisions to keep the
    split (moves, degrading, switches and errors are shown)."""

    def __init__(self, stack: Stack, name: str, fmt: LogFormat) -> None:
        from modm.logs import formatter

        super().__init__()
        self.stack, self.name = stack, name
        self.setFormatter(formatter(name, fmt))
        self._file = (stack.log_dir / f"{name}.log").open("a")

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self._file.write(text + "\n")
        self._file.flush()
        routine = record.msg == "decision" and getattr(record, "action", "") == "keep"
        if not routine or getattr(record, "degrade_misses", False):
            self.stack.line(self.name, text)

    def close(self) -> None:
        self._file.close()
        super().close()


def _slots(members: list[Member]) -> list[WorkerSlot]:
    """The worker slots of a plan, for the local scaler."""
    from modm.services.monitor.local_scaler import WorkerSlot

    return [
        WorkerSlot(
            m.name,
            m.port,
            {"large": m.roles["large"], "small": m.roles["small"]},
            "large" if m.env["MODM_WORKER_ROLE"] == "large" else "small",
        )
        for m in members
        if m.roles
    ]


def up(
    data_dir: Annotated[Path | None, typer.Option(help="State folder (default $MODM_HOME or ~/.modm).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config (tables large, small, cache, router, monitor).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the router binds to.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Router port.")] = ROUTER_PORT,
    http_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the OpenAI-compatible HTTP API (0: off).")
    ] = HTTP_PORT,
    large_tiny: Annotated[str, typer.Option(help="Tiny family of the large worker.")] = "sd3",
    small_tiny: Annotated[str, typer.Option(help="Tiny family of the small worker.")] = "sdxl",
    cache: Annotated[bool, typer.Option(help="Start the cache service.")] = True,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker slots (GPUs), each with its share of the CPU cores (default 2).")
    ] = None,
    large_slots: Annotated[
        int | None, typer.Option(min=0, help="Slots that start large (default ceil(workers/2)); the rest start small.")
    ] = None,
    emulate: Annotated[
        int | None, typer.Option(min=1, help="N emulated GPUs (device profiles, no GPU) instead of the worker slots.")
    ] = None,
    large_profile: Annotated[
        str, typer.Option(help="With --emulate: the large model's device profile (a shipped name or a file).")
    ] = DEFAULT_LARGE_PROFILE,
    small_profile: Annotated[
        str, typer.Option(help="With --emulate: the small model's device profile (a shipped name or a file).")
    ] = DEFAULT_SMALL_PROFILE,
    time_scale: Annotated[
        float,
        typer.Option(min=0.001, max=1000, help="With --emulate: multiply every time (profiles, windows, monitor)."),
    ] = 1.0,
    monitor: Annotated[bool, typer.Option(help="Run the monitor: it moves slots between the pools.")] = True,
    ready_timeout: Annotated[float, typer.Option(help="Seconds each service may take to be ready.")] = 600.0,
    log_format: Annotated[LogFormat, typer.Option(help="Every service's log format: text or json.")] = "text",
) -> None:
    """Start cache, workers, router and monitor; stream their logs; Ctrl-C stops everything."""
    from modm.cli.models import ensure_tiny
    from modm.launch import free_port
    from modm.logs import quiet_progress_bars
    from modm.paths import data_home
    from modm.services.monitor.local_scaler import LocalMonitor, LocalScaler, ProcessWorker

    settings: dict[str, Any] = tomllib.loads(config.read_text()) if config is not None else {}
    unknown = set(settings) - set(TABLES)
    if unknown:
        raise typer.BadParameter(f"unknown table(s) {', '.join(sorted(unknown))}", param_hint="--config")
    emulation = _emulation(settings, emulate, workers, large_profile, small_profile, time_scale)
    workers = emulate or workers or 2
    if large_slots is not None and large_slots > workers:
        raise typer.BadParameter(f"{large_slots} large slots but only {workers} workers", param_hint="--large-slots")
    home = data_home(data_dir)
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    quiet_progress_bars()  # building the tiny models saves weights with tqdm bars
    models = {"large": "", "small": ""}  # emulated slots serve profiles
    if emulation is None:
        for role, family in (("large", large_tiny), ("small", small_tiny)):
            given = settings.get(role, {}).pop("model", None)
            models[role] = str(given) if given else str(ensure_tiny(family, home))
    members = plan_stack(
        settings,
        home=home,
        host=host,
        port=port,
        large_model=models["large"],
        small_model=models["small"],
        with_cache=cache,
        ports=free_port,
        workers=workers,
        large_slots=large_slots,
        http_port=http_port,
        cores=len(os.sched_getaffinity(0)),
        log_format=log_format,
        emulation=emulation,
    )
    router = members[-1]
    scale = emulation.time_scale if emulation is not None else 1.0
    monitor_settings = (
        plan_monitor(settings, router_port=router.port, workers=workers, time_scale=scale) if monitor else None
    )

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(log_dir, sys.stdout)
    launched: dict[str, ServiceProcess] = {}

    def launch(slot: WorkerSlot, role: Role) -> ProcessWorker:
        stack.say(f"starting {slot.name} as {role} on {slot.address}")
        launched[slot.name] = stack.launch(slot.name, "modm.services.worker", dict(slot.envs[role]), slot.port)
        return ProcessWorker(launched[slot.name])

    scaler = LocalScaler(_slots(members), launch)
    watcher: LocalMonitor | None = None
    monitor_log = logging.getLogger("modm.services.monitor")
    handler = _StackLog(stack, "monitor", log_format)
    try:
        _start_all(stack, members, scaler, launched, ready_timeout, stop)
        if stop.is_set():
            return
        if monitor_settings is not None:
            monitor_log.addHandler(handler)
            monitor_log.setLevel(monitor_settings.log_level)
            monitor_log.propagate = False
            watcher = LocalMonitor(monitor_settings, scaler, scaled_policy(monitor_settings.policy, scale))
            watcher.start()
        if int(router.env["MODM_ROUTER_HTTP_PORT"]):
            stack.say(f"OpenAI-compatible Images API at http://{host}:{router.env['MODM_ROUTER_HTTP_PORT']}/v1")
        stack.say(f'try: modm generate "a lighthouse at dusk" --endpoint {host}:{router.port}')
        # Last, so that whoever waits for this line has everything above it.
        stack.say(f"modm is up: router at {host}:{router.port}  (logs in {log_dir}; Ctrl-C stops)")
        while not stop.wait(0.5):
            problem = stack.exited()
            if problem is not None:
                stack.say(f"{problem}; stopping")
                raise typer.Exit(1)
    finally:
        stack.say("stopping")
        if watcher is not None:
            watcher.stop()
        stack.stop()
        monitor_log.removeHandler(handler)
        handler.close()
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)


def _emulation(
    settings: dict[str, Any],
    emulate: int | None,
    workers: int | None,
    large_profile: str,
    small_profile: str,
    time_scale: float,
) -> Emulation | None:
    """The emulated fleet `--emulate` asks for (its profiles checked now, not in N workers), or
    None; the flags that only make sense with it, or not with it, are refused."""
    from modm.services.worker.device_profile import ProfileError, load_profile

    if emulate is None:
        if time_scale != 1.0:
            raise typer.BadParameter("scales an emulated fleet's times: give --emulate N", param_hint="--time-scale")
        return None
    if workers is not None:
        raise typer.BadParameter("--emulate N gives the slots: drop --workers", param_hint="--workers")
    for role, hint in (("large", "--large-profile"), ("small", "--small-profile")):
        for key in ("model", "device"):
            if key in settings.get(role, {}):
                raise typer.BadParameter(f"[{role}] names a {key}, but emulated GPUs serve profiles", param_hint=hint)
    for profile, hint in ((large_profile, "--large-profile"), (small_profile, "--small-profile")):
        try:
            load_profile(profile)
        except ProfileError as error:
            raise typer.BadParameter(str(error), param_hint=hint) from None
    return Emulation(large_profile, small_profile, time_scale)


def _start_all(
    stack: Stack,
    members: list[Member],
    scaler: LocalScaler,
    launched: dict[str, ServiceProcess],
    timeout: float,
    stop: threading.Event,
) -> None:
    """Cache first, then every worker slot (loading in parallel), then the router."""
    router = members[-1]
    for member in (m for m in members if m.name == "cache"):
        stack.say(f"starting {member.name} on 127.0.0.1:{member.port}")
        if _ready(stack, member.name, stack.start(member), timeout, stop, optional=member.optional):
            router.env["MODM_ROUTER_CACHE"] = f"127.0.0.1:{member.port}"
        else:
            stack.running.pop()
    if stop.is_set():
        return
    scaler.start_all()
    stack.running.append(("workers", scaler))
    for slot in scaler.slots:
        _ready(stack, slot.name, launched[slot.name], timeout, stop)
    if stop.is_set():
        return
    stack.say(f"starting {router.name} on 127.0.0.1:{router.port}")
    _ready(stack, router.name, stack.start(router), timeout, stop)


def _ready(
    stack: Stack, name: str, proc: ServiceProcess, timeout: float, stop: threading.Event, *, optional: bool = False
) -> bool:
    """Waits for SERVING; a required member that fails stops `modm up`, an optional one is dropped."""
    try:
        _wait(proc, timeout, stop)
    except (RuntimeError, TimeoutError) as error:
        reason = f"{str(error).splitlines()[0].rstrip(':')}; its output is above and in {proc.log_path}"
        if not optional:
            stack.say(f"{name} did not start: {reason}")
            raise typer.Exit(1) from error
        stack.say(f"{name} did not start ({reason}); going on without it")
        proc.stop()
        return False
    if not stop.is_set():
        stack.say(f"{name} is SERVING")
    return True


def _wait(proc: ServiceProcess, timeout: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        try:
            proc.wait_serving(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            return
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise
