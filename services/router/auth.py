"""Who a caller of the router's public ports (gRPC and HTTP) is, and which tenants it may act for.

Credentials bind tenants, requests do not choose them: a bearer token from the tokens file
(`<token> <tenant>[,<tenant>...]`, `*` for an operator that may act for any tenant, a bare
`<token>` for the default tenant only), and with mutual TLS a client certificate's SAN URIs
(`modm://tenant/NAME`, `modm://tenant/*`). The tokens file is typically a mounted Kubernetes
Secret and is re-read when it changes, so tokens rotate without a restart. Health checks and
reflection stay open (probes and load balancers carry no credential).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from modm.errors import ModmError, PermissionDenied, Unauthenticated
from modm.grpc_errors import abort_with
from modm.grpc_handlers import checked
from modm.tenants import check_tenant, is_tenant
from modm.v1 import router_pb2

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
ANY_TENANT = "*"
CERTIFICATE_TENANT_PREFIX = "modm://tenant/"


@dataclass(frozen=True)
class Principal:
    """The tenants a caller may act for; an operator may act for any."""

    tenants: frozenset[str] = frozenset()
    operator: bool = False

    def allows(self, tenant: str) -> bool:
        return self.operator or tenant in self.tenants

    def restricted_to(self, other: Principal) -> Principal:
        """What both allow: a token and a certificate presented together each limit the caller."""
        if self.operator:
            return other
        if other.operator:
            return self
        return Principal(self.tenants & other.tenants)

    def tenant_for(self, requested: str, default: str) -> str:
        """The tenant a request acts for: the one it names, else the credential's only tenant, else
        `default`. PermissionDenied, naming the tenant, when the credential does not allow it."""
        if requested:
            tenant = requested
        elif not self.operator and len(self.tenants) == 1:
            (tenant,) = self.tenants
        else:
            tenant = default
        if self.allows(tenant):
            return tenant
        check_tenant(tenant)  # a malformed name is the field's fault, and is not echoed
        raise PermissionDenied(f"tenant {tenant}: this credential may not act for it")


ANYONE = Principal(operator=True)


@dataclass(frozen=True)
class TokenTable:
    """A parsed tokens file: each token's principal, and the lines that held a bare token."""

    principals: dict[str, Principal]
    bare_lines: tuple[int, ...]


def _entries(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every line that is neither blank nor a `#` comment."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped.split()


def parse_tokens(text: str) -> frozenset[str]:
    """The tokens of a tokens file, bindings aside: what a client of the router presents."""
    return frozenset(fields[0] for _, fields in _entries(text))


def operator_token(text: str) -> str | None:
    """The first operator token (`<token> *`) of a tokens file: what the monitor presents, since
    SetDegrade changes how every tenant is served. None when the file holds none."""
    return next((fields[0] for _, fields in _entries(text) if fields[1:] == [ANY_TENANT]), None)


def _tenant_list(number: int, listed: str) -> Principal:
    names = listed.split(",")
    if ANY_TENANT in names:
        if len(names) > 1:
            raise ValueError(f"line {number}: '{ANY_TENANT}' (any tenant) stands alone")
        return ANYONE
    for name in names:
        if not is_tenant(name):
            raise ValueError(f"line {number}: {name!r} is not a tenant (1-64 of letters, digits, '_', '.', '-')")
    return Principal(frozenset(names))


def parse_bindings(text: str, default_tenant: str) -> TokenTable:
    """Every `<token> [<tenant>,...|*]` line; ValueError naming the line of the first bad one
    (never quoting a token)."""
    principals: dict[str, Principal] = {}
    first_line: dict[str, int] = {}
    bare: list[int] = []
    for number, fields in _entries(text):
        if len(fields) > 2:
            raise ValueError(f"line {number}: expected '<token> <tenant>[,<tenant>...]' or '<token> *'")
        token = fields[0]
        if token in first_line:
            raise ValueError(f"line {number}: repeats the token of line {first_line[token]}")
        first_line[token] = number
        if len(fields) == 1:
            bare.append(number)
            principals[token] = Principal(frozenset({default_tenant}))
        else:
            principals[token] = _tenant_list(number, fields[1])
    return TokenTable(principals, tuple(bare))


class TokenFile:
    """The tokens of a file and their tenants, re-read whenever it changes: its modification
    time, size or inode (a Kubernetes Secret update swaps a symlink, and a rewrite can land in
    the same mtime tick). A change that does not parse is logged and the last good set kept."""

    def __init__(self, path: Path, default_tenant: str = "default") -> None:
        self.path = path
        self.default_tenant = default_tenant
        self._stamp: tuple[int, int, int] | None = None
        self._principals: dict[str, Principal] = {}
        self._told_bare = False
        self._current()  # fail at start-up, not at the first call: a missing file, a bad line
        if not self._principals:
            raise ValueError(f"{path} holds no token")

    def _current(self) -> dict[str, Principal]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return self._principals
            text = self.path.read_text()
        except OSError:
            if self._stamp is None:
                raise
            return self._principals  # keep the last good set while a secret is being swapped
        try:
            table = parse_bindings(text, self.default_tenant)
        except ValueError as error:
            if self._stamp is None:
                raise ValueError(f"{self.path}, {error}") from None
            log.error(
                "tokens file not reloaded, the last good tokens stay",
                extra={"path": str(self.path), "error": str(error)},
            )
            self._stamp = stamp  # said once per change, not at every call
            return self._principals
        if table.bare_lines and not self._told_bare:
            self._told_bare = True
            log.warning(
                "bare tokens act for the default tenant only; bind them with '<token> <tenant>'",
                extra={"path": str(self.path), "lines": list(table.bare_lines), "tenant": self.default_tenant},
            )
        if table.principals or self._stamp is None:
            self._principals = table.principals
        self._stamp = stamp
        return self._principals

    def principal(self, presented: str) -> Principal | None:
        """The principal of `presented`, None for an unknown token (every token is compared, in
        constant time each)."""
        found = None
        for token, principal in self._current().items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = principal
        return found

    def accepts(self, presented: str) -> bool:
        return self.principal(presented) is not None


def certificate_principal(uris: Iterable[str]) -> Principal | None:
    """The tenants a client certificate's SAN URIs name, None when it names none. The subject
    CN is never read as a tenant: it usually names a host or a service, not a tenant."""
    names = [uri.removeprefix(CERTIFICATE_TENANT_PREFIX) for uri in uris if uri.startswith(CERTIFICATE_TENANT_PREFIX)]
    if not names:
        return None
    if ANY_TENANT in names:
        return ANYONE
    for name in names:
        if not is_tenant(name):
            raise PermissionDenied(f"the client certificate's {CERTIFICATE_TENANT_PREFIX}{name} names no valid tenant")
    return Principal(frozenset(names))


class Authenticator:
    """The caller's principal from what it presented, shared by the gRPC and HTTP ports.

    With a tokens file every call needs a known token, which binds its tenants. With mutual TLS
    a certificate that names tenants binds them too; with a token as well, the caller may act
    only for tenants both allow. A certificate that names none, without a token, acts for the
    default tenant. Neither configured: anyone, for any tenant."""

    def __init__(self, tokens: TokenFile | None, default_tenant: str, *, client_certificates: bool = False) -> None:
        self.tokens = tokens
        self.default_tenant = default_tenant
        self.client_certificates = client_certificates

    def principal(self, token: str | None, certificate_uris: Sequence[str] = ()) -> Principal:
        bound: Principal | None = None
        if self.tokens is not None:
            if token is None:
                raise Unauthenticated("missing bearer token")
            bound = self.tokens.principal(token)
            if bound is None:
                raise Unauthenticated("unknown bearer token")
        if self.client_certificates:
            named = certificate_principal(certificate_uris)
            if named is not None:
                return named if bound is None else bound.restricted_to(named)
            if bound is None:
                return Principal(frozenset({self.default_tenant}))
        return bound or ANYONE


def parse_bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (gRPC metadata or HTTP header)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            token = parse_bearer(value.decode() if isinstance(value, bytes) else value)
            if token is not None:
                return token
    return None


def peer_uris(context: aio.ServicerContext) -> list[str]:
    """The URI SANs of the verified client certificate (none without mutual TLS)."""
    return [uri.decode() for uri in context.auth_context().get("peer_uri", ())]


class BearerAuthInterceptor(aio.ServerInterceptor):
    """Authenticates every call but health and reflection, and binds each Generate request to a
    tenant its credential allows: the resolved tenant is written into the request, so the rate
    limit after this and the servicer see only that tenant. Refused calls reach nothing."""

    def __init__(
        self, tokens: TokenFile | None, default_tenant: str = "default", *, client_certificates: bool = False
    ) -> None:
        self._auth = Authenticator(tokens, default_tenant, client_certificates=client_certificates)

    def _bind(self, request: Any, token: str | None, context: aio.ServicerContext) -> None:
        principal = self._auth.principal(token, peer_uris(context))
        if isinstance(request, router_pb2.GenerateRequest):  # not a malformed one: that is refused next
            request.tenant = principal.tenant_for(request.tenant, self._auth.default_tenant)
        elif isinstance(request, router_pb2.SetDegradeRequest) and not principal.operator:
            raise PermissionDenied("SetDegrade changes how every tenant is served: it needs an operator credential")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)

        async def authorize(request: Any, context: aio.ServicerContext) -> None:
            try:
                self._bind(request, token, context)
            except ModmError as error:
                log.info("refused call", extra={"method": method, "reason": str(error)})
                await abort_with(context, error, method)

        bound = checked(handler, authorize)
        if bound is not None:
            return bound

        async def unsupported(request: Any, context: aio.ServicerContext) -> None:  # fail closed
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "streamed requests are not served")

        return grpc.unary_unary_rpc_method_handler(unsupported)
