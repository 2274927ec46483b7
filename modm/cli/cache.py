"""`modm cache`: serve the image cache over gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def cache(
    embedder: Annotated[str | None, typer.Option(help="minilm (default) or open_clip.")] = None,
    open_clip_model: Annotated[
        str | None, typer.Option(help="open_clip name (ViT-L-14), hf-hub:org/repo or local-dir:/path.")
    ] = None,
    open_clip_pretrained: Annotated[str | None, typer.Option(help="Pretrained tag or weights file.")] = None,
    tiny_clip: Annotated[
        bool, typer.Option("--tiny-clip", help="open_clip with a tiny random model (built on first use).")
    ] = False,
    thresholds: Annotated[
        str | None, typer.Option(help="Threshold table: JSON pairs of min_similarity and k (thresholds.parse_table).")
    ] = None,
    milvus_uri: Annotated[
        str | None, typer.Option(help="Milvus Lite file (*.db) or http://host:port of a server.")
    ] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="host:port of an S3 server; unset starts an embedded SeaweedFS.")
    ] = None,
    s3_bucket: Annotated[str | None, typer.Option(help="Bucket for image bytes.")] = None,
    s3_access_key: Annotated[str | None, typer.Option(help="S3 access key.")] = None,
    s3_secret_key: Annotated[str | None, typer.Option(help="S3 secret key (prefer MODM_CACHE_S3_SECRET_KEY).")] = None,
    s3_secure: Annotated[bool | None, typer.Option(help="TLS to the S3 endpoint.")] = None,
    eviction_policy: Annotated[str | None, typer.Option(help="fifo, lru or lcbfu.")] = None,
    max_entries: Annotated[int | None, typer.Option(help="Global entry cap.")] = None,
    max_bytes: Annotated[int | None, typer.Option(help="Global byte cap.")] = None,
    tenant_max_entries: Annotated[int | None, typer.Option(help="Per-tenant entry cap.")] = None,
    tenant_max_bytes: Annotated[int | None, typer.Option(help="Per-tenant byte cap.")] = None,
    ttl_seconds: Annotated[float | None, typer.Option(help="Expire entries this old.")] = None,
    import_root: Annotated[Path | None, typer.Option(help="Folder imports may read from.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port.")] = None,
    log_format: Annotated[str | None, typer.Option(help="json or text.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="modm's data folder (default ~/.modm); the cache keeps <dir>/cache.")
    ] = None,
) -> None:
    """Serve the cache; flags override MODM_CACHE_* environment variables."""
    from pydantic import ValidationError

    from modm.paths import data_home
    from modm.services.cache.server import main
    from modm.services.cache.settings import CacheSettings

    home = data_home(data_dir)
    if tiny_clip:
        if open_clip_model is not None:
            raise typer.BadParameter("give --open-clip-model or --tiny-clip, not both", param_hint="--tiny-clip")
        from modm.cli.progress import spinner
        from modm.services.cache.tiny_clip import build_tiny_clip

        target = home / "models" / "tiny-clip"
        if not (target / "open_clip_config.json").exists():
            with spinner(f"building a tiny open_clip model into {target}"):
                build_tiny_clip(target)
        embedder, open_clip_model = "open_clip", f"local-dir:{target}"
    try:
        settings = CacheSettings.load(
            embedder=embedder,
            open_clip_model=open_clip_model,
            open_clip_pretrained=open_clip_pretrained,
            thresholds=thresholds,
            milvus_uri=milvus_uri,
            s3_endpoint=s3_endpoint,
            s3_bucket=s3_bucket,
            s3_access_key=s3_access_key,
            s3_secret_key=s3_secret_key,
            s3_secure=s3_secure,
            eviction_policy=eviction_policy,
            max_entries=max_entries,
            max_bytes=max_bytes,
            tenant_max_entries=tenant_max_entries,
            tenant_max_bytes=tenant_max_bytes,
            ttl_seconds=ttl_seconds,
            import_root=import_root,
            host=host,
            port=port,
            metrics_port=metrics_port,
            log_format=log_format,
            data_dir=home / "cache" if data_dir is not None else None,
        )
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from error
    main(settings)
