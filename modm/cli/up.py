"""`modm up`: the whole stack on one machine, as separate processes.

With no configuration: the cache service (Milvus Lite + an embedded S3 server, MiniLM embedder;
skipped with a warning if it cannot start), one large and one small worker serving tiny
pipelines built on first use (no GPU, no network), and the router on 127.0.0.1:50051. Logs are
streamed with a prefix per service and kept under <data dir>/logs; the cache keeps its data
under <data dir>/cache, so the next `modm up` starts with what was cached.

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
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any

import typer

ROUTER_PORT = 50051


@dataclass
class Member:
    name: str
    module: str
    env: dict[str, str]
    port: int
    optional: bool = False


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
) -> list[Member]:
    """The processes to start, in start order (cache, workers, router)."""
    members: list[Member] = []
    cache_port = ports()
    if with_cache:
        env = {"MODM_CACHE_DATA_DIR": str(home / "cache"), "MODM_CACHE_LOG_FORMAT": "text"}
        env |= _env("MODM_CACHE_", config.get("cache", {}))
        env |= {"MODM_CACHE_HOST": "127.0.0.1", "MODM_CACHE_PORT": str(cache_port)}
        members.append(Member("cache", "modm.services.cache", env, cache_port, optional=True))
    for role, model in (("large", large_model), ("small", small_model)):
        worker_port = ports()
        env = {"MODM_WORKER_MODEL": model, "MODM_WORKER_LOG_FORMAT": "text"}
        env |= _env("MODM_WORKER_", config.get(role, {}))
        env |= {"MODM_WORKER_ROLE": role, "MODM_WORKER_HOST": "127.0.0.1", "MODM_WORKER_PORT": str(worker_port)}
        members.append(Member(role, "modm.services.worker", env, worker_port))
    router_env = {"MODM_ROUTER_LOG_FORMAT": "text", "MODM_ROUTER_HOST": host, "MODM_ROUTER_PORT": str(port)}
    router_env |= _env("MODM_ROUTER_", config.get("router", {}))
    router_env |= {
        "MODM_ROUTER_LARGE_WORKERS": f"127.0.0.1:{members[-2].port}",
        "MODM_ROUTER_SMALL_WORKERS": f"127.0.0.1:{members[-1].port}",
    }
    router_port = int(router_env["MODM_ROUTER_PORT"])
    members.append(Member("router", "modm.services.router", router_env, router_port))
    return members


class Stack:
    """Starts members, tees their output with a prefix, stops them in reverse order."""

    def __init__(self, log_dir: Path, out: IO[str]) -> None:
        self.log_dir = log_dir
        self.out = out
        self.running: list[tuple[Member, Any]] = []
        self._lock = threading.Lock()

    def start(self, member: Member) -> Any:
        from modm.launch import start_module

        log_path = self.log_dir / f"{member.name}.log"
        proc = start_module(member.module, member.env, log_path, member.port, stdout=subprocess.PIPE)
        threading.Thread(target=self._tee, args=(member.name, proc.proc, log_path), daemon=True).start()
        self.running.append((member, proc))
        return proc

    def _tee(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        assert proc.stdout is not None
        with log_path.open("ab") as log:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                with self._lock:
                    self.out.write(f"[{name:6}] {raw.decode(errors='replace').rstrip()}\n")
                    self.out.flush()

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[modm  ] {text}\n")
            self.out.flush()

    def exited(self) -> str | None:
        for member, proc in self.running:
            if proc.proc.poll() is not None:
                return f"{member.name} exited with {proc.proc.returncode}"
        return None

    def stop(self) -> None:
        for member, proc in reversed(self.running):
            code = proc.stop(signal.SIGTERM, timeout=60)
            self.say(f"{member.name} stopped ({code})")
        self.running.clear()


def up(
    data_dir: Annotated[Path | None, typer.Option(help="State folder (default $MODM_HOME or ~/.modm).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config (tables large, small, cache, router).")] = None,
    host: Annotated[str, typer.Option(help="Address the router binds to.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Router port.")] = ROUTER_PORT,
    large_tiny: Annotated[str, typer.Option(help="Tiny family of the large worker.")] = "sd3",
    small_tiny: Annotated[str, typer.Option(help="Tiny family of the small worker.")] = "sdxl",
    cache: Annotated[bool, typer.Option(help="Start the cache service.")] = True,
    ready_timeout: Annotated[float, typer.Option(help="Seconds each service may take to be ready.")] = 600.0,
) -> None:
    """Start cache, workers and router; stream their logs; Ctrl-C stops everything."""
    from modm.cli.models import ensure_tiny
    from modm.launch import free_port
    from modm.paths import data_home

    home = data_home(data_dir)
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = tomllib.loads(config.read_text()) if config is not None else {}
    unknown = set(settings) - {"large", "small", "cache", "router"}
    if unknown:
        raise typer.BadParameter(f"unknown table(s) {', '.join(sorted(unknown))}", param_hint="--config")
    models = {}
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
    )

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(log_dir, sys.stdout)
    try:
        _start_all(stack, members, ready_timeout, stop)
        if stop.is_set():
            return
        router = members[-1]
        stack.say(f"modm is up: router at {host}:{router.port}  (logs in {log_dir}; Ctrl-C stops)")
        stack.say(f'try: modm generate "a lighthouse at dusk" --endpoint {host}:{router.port}')
        while not stop.wait(0.5):
            problem = stack.exited()
            if problem is not None:
                stack.say(f"{problem}; stopping")
                raise typer.Exit(1)
    finally:
        stack.say("stopping")
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start_all(stack: Stack, members: list[Member], timeout: float, stop: threading.Event) -> None:
    """Cache first, then both workers (loading in parallel), then the router."""
    groups = [[m for m in members if m.name == "cache"], [m for m in members if m.name in ("large", "small")]]
    groups.append([m for m in members if m.name == "router"])
    for group in groups:
        started = []
        for member in group:
            if stop.is_set():
                return
            if member.name == "router" and any(m.name == "cache" for m, _ in stack.running):
                cache = next(m for m in members if m.name == "cache")
                member.env["MODM_ROUTER_CACHE"] = f"127.0.0.1:{cache.port}"
            stack.say(f"starting {member.name} on 127.0.0.1:{member.port}")
            started.append((member, stack.start(member)))
        for member, proc in started:
            try:
                _wait(proc, timeout, stop)
            except (RuntimeError, TimeoutError) as error:
                if not member.optional:
                    stack.say(f"{member.name} did not start: {str(error).splitlines()[0]}")
                    raise typer.Exit(1) from error
                stack.say(f"{member.name} did not start ({str(error).splitlines()[0]}); going on without it")
                stack.running.remove((member, proc))
                proc.stop()
                continue
            if not stop.is_set():
                stack.say(f"{member.name} is SERVING")


def _wait(proc: Any, timeout: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        try:
            proc.wait_serving(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            return
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise
