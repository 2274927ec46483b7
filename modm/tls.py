"""TLS and mutual TLS for every modm gRPC port and channel, built in this one place.

Server side (any service, through `ServiceHost`): a certificate and key switch the port to TLS;
a client CA on top makes it mutual: the handshake refuses every client that does not present a
certificate signed by that CA, before any RPC runs.

Client side (the router's channels to workers and cache, the SDK and the CLI): trust a CA
bundle (or the system roots), present a client certificate when the server asks for one, and
optionally expect a fixed name on the server's certificate, because the router dials pods by
the IP addresses discovery resolved and those are not on any certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


def server_credentials(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> grpc.ServerCredentials:
    """TLS with this certificate; with `client_ca_file`, clients must present a certificate it signed."""
    roots = client_ca_file.read_bytes() if client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(key_file.read_bytes(), cert_file.read_bytes())],
        root_certificates=roots,
        require_client_auth=roots is not None,
    )


def channel_credentials(
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
) -> grpc.ChannelCredentials:
    """Client TLS: trust `root_certificates` (None: the system roots) and, for mTLS, present the
    client certificate chain with its key."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate and its key go together")
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


@dataclass(frozen=True)
class ClientTls:
    """How one service dials another over TLS, from files (mounted Secrets in a cluster)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # The name the server's certificate must carry, when it differs from the dialled address.
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return channel_credentials(
            self.ca_file.read_bytes() if self.ca_file is not None else None,
            self.cert_file.read_bytes() if self.cert_file is not None else None,
            self.key_file.read_bytes() if self.key_file is not None else None,
        )

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def client_tls(
    prefix: str, ca_file: Path | None, cert_file: Path | None, key_file: Path | None, server_name: str | None
) -> ClientTls | None:
    """Settings `<prefix>_ca_file` etc. as a ClientTls: None (plaintext) without a CA; a client
    certificate needs its key and a CA."""
    if (cert_file is None) != (key_file is None):
        raise ValueError(f"{prefix}_cert_file and {prefix}_key_file go together")
    if ca_file is None:
        if cert_file is not None:
            raise ValueError(f"{prefix}_cert_file needs {prefix}_ca_file")
        return None
    return ClientTls(ca_file, cert_file, key_file, server_name)


def open_channel(transport: Any, target: str, options: Sequence[tuple[str, Any]], tls: ClientTls | None) -> Any:
    """A channel from `grpc` (blocking) or `grpc.aio` (both spell the factories alike), TLS when
    `tls` is given."""
    if tls is None:
        return transport.insecure_channel(target, options=list(options))
    return transport.secure_channel(target, tls.credentials(), options=[*options, *tls.options()])
