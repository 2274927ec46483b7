"""`modm generate` and `modm stats`: talk to a router (by default the one `modm up` serves)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modm.client import Client

Endpoint = Annotated[str | None, typer.Option(help="Router host:port (default $MODM_ENDPOINT or 127.0.0.1:50051).")]
Token = Annotated[str | None, typer.Option(help="Bearer token (default $MODM_TOKEN).")]
Tls = Annotated[bool, typer.Option(help="Use TLS (system roots, or --ca-file).")]
CaFile = Annotated[Path | None, typer.Option(help="PEM root certificate(s) for TLS.")]
CertFile = Annotated[Path | None, typer.Option(help="PEM client certificate, for a router that requires mTLS.")]
KeyFile = Annotated[Path | None, typer.Option(help="PEM key of --cert-file.")]


def _client(
    endpoint: str | None,
    token: str | None,
    tls: bool,
    ca_file: Path | None,
    timeout: float,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> Client:
    from modm.client import Client

    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return Client(
        endpoint,
        token=token,
        timeout=timeout,
        tls=tls,
        root_certificates=read(ca_file),
        client_certificate=read(cert_file),
        client_key=read(key_file),
    )


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Where to save the image.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
    negative_prompt: Annotated[str, typer.Option(help="What to steer away from.")] = "",
    width: Annotated[int, typer.Option(help="0 = the model's default.")] = 0,
    height: Annotated[int, typer.Option(help="0 = the model's default.")] = 0,
    steps: Annotated[int, typer.Option(help="0 = the model's default.")] = 0,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="png, webp or jpeg.")] = "png",
    tenant: Annotated[str, typer.Option(help="Cache tenant (default: the router's).")] = "",
    cache: Annotated[str, typer.Option(help="read_write, bypass, no_store or off.")] = "read_write",
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 300.0,
    endpoint: Endpoint = None,
    token: Token = None,
    tls: Tls = False,
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
) -> None:
    """Generate one image and print how it was served."""
    from modm.client import ModmClientError

    try:
        with _client(endpoint, token, tls, ca_file, timeout, cert_file, key_file) as client:
            result = client.generate(
                prompt,
                negative_prompt=negative_prompt,
                width=width,
                height=height,
                steps=steps,
                guidance_scale=guidance,
                seed=seed,
                output_format=output_format,
                tenant=tenant,
                cache_policy=cache,
            )
    except (ModmClientError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    path = result.save(out if out is not None else Path(f"modm-{result.request_id[:12]}.{result.format}"))
    meta = result.metadata() | {"saved_to": str(path)}
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
        return
    how = result.outcome
    if result.outcome == "hit":
        how += f" (similarity {result.similarity:.3f}, k={result.skipped_steps}, strength {result.strength:g})"
    if result.degraded:
        how += ", degraded to the small pool"
    if not result.cache_available:
        how += f" [{result.cache_note}]"
    typer.echo(f"{path}  {result.width}x{result.height}  {how}")
    typer.echo(
        f"served by {result.pool} {result.model_id} {result.worker}  "
        f"in {result.timings['total_seconds']:.3f}s (lookup {result.timings['lookup_seconds']:.3f}s, "
        f"queue {result.timings['queue_seconds']:.3f}s, generate {result.timings['generate_seconds']:.3f}s)"
    )


def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    endpoint: Endpoint = None,
    token: Token = None,
    tls: Tls = False,
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
) -> None:
    """The router's sliding-window statistics (what the monitor reads)."""
    from modm.client import ModmClientError

    try:
        with _client(endpoint, token, tls, ca_file, 30.0, cert_file, key_file) as client:
            report = client.stats()
    except ModmClientError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"window {report['window_seconds']:.0f}s: {report['requests']} requests "
        f"({report['request_rate_per_min']:.2f}/min), hit rate {report['hit_rate']:.2%}, "
        f"kappa {report['kappa']:.3f}, cache {'up' if report['cache_available'] else 'DOWN'}"
    )
    typer.echo(f"outcomes {report['outcomes']}  k {report['k_distribution']}")
    for pool in report["pools"]:
        typer.echo(
            f"pool {pool['pool']:5}: {pool['workers']} workers, queue {pool['queue_depth']}, "
            f"in flight {pool['in_flight']}/{pool['capacity']}"
        )
    for w in report["workers"]:
        typer.echo(
            f"  {w['address']} {w['pool']} {w['family']} {'ok' if w['healthy'] else 'UNHEALTHY'} "
            f"done {w['completed']} mean {w['mean_service_seconds']:.3f}s "
            f"({w['mean_seconds_per_step']:.4f}s/step, profiled {w['profiled_seconds_per_step']:.4f})"
        )
