"""The one logging set-up of every modm process: one record per line on stderr, in one format.

`json` (the services' default: one object per line, so log pipelines can index every field) or
`text` (what `modm up` shows on a terminal: the record's extra fields follow the message as
key=value). Python warnings and the libraries that print in a format of their own or chatter at
INFO are routed through it too, so a healthy start is quiet and a real problem shows in full.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Literal

LogFormat = Literal["json", "text"]

# uvicorn's color_message repeats the message with terminal colour codes.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

# Libraries whose INFO is start-up chatter rather than operations: faiss names every CPU build it
# tries to load (AVX512-SPR, AVX512, AVX2) before the one that works.
QUIET_LOGGERS = {"faiss": logging.WARNING}
# Libraries that attach their own stderr handler, in their own format, when imported.
OWN_HANDLER_LIBRARIES = ("pymilvus",)
# Deprecations raised inside dependencies, understood and not modm's to fix (category, message
# regex): diffusers' AutoPipeline imports every pipeline, and the Kolors text encoder applies
# @torch.jit.script at import; modm never runs Kolors.
UNDERSTOOD_WARNINGS: tuple[tuple[type[Warning], str], ...] = ((FutureWarning, r"`torch\.jit\.script` is deprecated"),)
# Model libraries whose tqdm loading bars would break the one-record-per-line stream.
_PROGRESS_BAR_SWITCHES = ("transformers.utils.logging", "diffusers.utils.logging")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _text_value(value: Any) -> str:
    """A string without spaces as is; anything else as JSON, so a value stays on its line."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`time LEVEL service logger: message key=value ...`, then the traceback if there is one."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in _extras(record).items())
        return f"{line} {fields}" if fields else line


def formatter(service: str, fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter(service) if fmt == "json" else TextFormatter(service)


def ignore_understood_warnings() -> None:
    for category, message in UNDERSTOOD_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_progress_bars() -> None:
    """huggingface_hub (and transformers through it) reads the variable when first imported, and
    child processes inherit it; libraries imported already are switched off directly."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for name in _PROGRESS_BAR_SWITCHES:
        module = sys.modules.get(name)
        if module is not None:
            module.disable_progress_bar()


def configure_logging(service: str, level: str = "INFO", fmt: LogFormat = "json") -> None:
    """Route all logging to stderr in the chosen format; safe to call more than once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(service, fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # a warning that is not understood is a WARNING record
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in OWN_HANDLER_LIBRARIES:
            logger.handlers.clear()
            logger.propagate = True
    quiet_progress_bars()


# At import, not in configure_logging: the worker imports diffusers (which raises the deprecation
# as it is imported) right after this module, before its main configures logging.
ignore_understood_warnings()
