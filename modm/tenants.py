"""Tenant names: the one pattern every service and setting accepts.

Tenant ids end up in vector-store filter expressions, object keys, token files, certificates and
log fields, so they are restricted to a small alphabet that nothing ever needs to quote.
"""

from __future__ import annotations

import re

from modm.errors import InvalidArgument

# For pydantic `pattern=`; in Python, match with `is_tenant` (fullmatch: `$` alone lets "a\n" through).
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TENANT = re.compile(TENANT_PATTERN)


def is_tenant(name: str) -> bool:
    return _TENANT.fullmatch(name) is not None


def check_tenant(tenant: str, field: str = "tenant") -> str:
    """`tenant`, or InvalidArgument naming `field`."""
    if not tenant:
        raise InvalidArgument(field, "must not be empty")
    if not is_tenant(tenant):
        raise InvalidArgument(
            field,
            "must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit",
        )
    return tenant
