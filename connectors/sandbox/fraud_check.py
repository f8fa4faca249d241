"""The sandbox tax provider's check of HMRC fraud-prevention headers (``BATCH_PROCESS_DIRECT``).

Written from HMRC's specification (v3.x, connection method "batch process direct"), not from the
connector's code, so the two can disagree and a test then fails. :func:`problems` lists what is
missing or malformed; :func:`error_body` is the answer in the shape of HMRC's Test Fraud
Prevention Headers API (``code`` ``INVALID_HEADERS``, one error per problem naming its headers in
lower case).

>>> good = {
...     "Gov-Client-Connection-Method": "BATCH_PROCESS_DIRECT",
...     "Gov-Client-Device-ID": "beec798b-b366-47fa-b1f8-92cede14a1ce",
...     "Gov-Client-Local-IPs": "10.1.2.3,fc00%3A%3A",
...     "Gov-Client-Local-IPs-Timestamp": "2026-12-01T10:30:05.123Z",
...     "Gov-Client-MAC-Addresses": "ea%3A43%3A1a%3A5d%3A21%3A45",
...     "Gov-Client-Timezone": "UTC+00:00",
...     "Gov-Client-User-Agent": "os-family=Linux&os-version=6.1&device-manufacturer=&device-model=",
...     "Gov-Client-User-IDs": "os=batch",
...     "Gov-Vendor-License-IDs": "",
...     "Gov-Vendor-Product-Name": "sme-dossier",
...     "Gov-Vendor-Version": "sme-dossier=0.1.0",
... }
>>> problems(good)
[]
>>> problems({**good, "Gov-Client-Timezone": "GMT", "Gov-Vendor-Product-Name": "SME Dossier"})
[('INVALID_HEADER', 'gov-client-timezone', 'must be UTC±hh:mm'), ('INVALID_HEADER', 'gov-vendor-product-name', 'must be percent encoded')]
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from urllib.parse import unquote

SPEC_VERSION = "3.3"
METHOD = "BATCH_PROCESS_DIRECT"
REQUIRED = (
    "gov-client-connection-method",
    "gov-client-device-id",
    "gov-client-local-ips",
    "gov-client-local-ips-timestamp",
    "gov-client-mac-addresses",
    "gov-client-timezone",
    "gov-client-user-agent",
    "gov-client-user-ids",
    "gov-vendor-license-ids",
    "gov-vendor-product-name",
    "gov-vendor-version",
)
ENCODED = re.compile(r"(?:[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2})*")
"""A percent-encoded key or value: RFC 3986 unreserved characters and %XX escapes only."""
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
TIMEZONE = re.compile(r"UTC[+-]\d{2}:\d{2}")
MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
HASH = re.compile(r"[0-9A-Fa-f]{32,128}")

Problem = tuple[str, str, str]
"""(error code, header in lower case, what is wrong)."""


def _encoded(value: str) -> bool:
    return ENCODED.fullmatch(value) is not None


def _pairs(value: str) -> dict[str, str] | None:
    """The key-value structure ``k=v&k=v`` decoded, or None when it is not one (or not encoded)."""
    if value == "":
        return {}
    pairs: dict[str, str] = {}
    for item in value.split("&"):
        key, sep, item_value = item.partition("=")
        if not sep or not key or not _encoded(key) or not _encoded(item_value):
            return None
        pairs[unquote(key)] = unquote(item_value)
    return pairs


def _items(value: str) -> list[str] | None:
    """The list structure ``v,v`` decoded (None when a value is not percent encoded)."""
    if value == "":
        return []
    items = value.split(",")
    if not all(item and _encoded(item) for item in items):
        return None
    return [unquote(item) for item in items]


def _check(name: str, value: str) -> str | None:
    """What is wrong with header ``name`` (lower case) holding ``value``, or None."""
    if name == "gov-client-connection-method":
        return None if value == METHOD else f"must be {METHOD} for this application"
    if name == "gov-client-device-id":
        try:
            uuid.UUID(value)
        except ValueError:
            return "must be a UUID"
        return None
    if name == "gov-client-local-ips":
        ips = _items(value)
        if not ips:
            return "must list the device's local IP addresses, percent encoded"
        for ip in ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                return f"{ip!r} is not an IP address"
        return None
    if name == "gov-client-local-ips-timestamp":
        return None if TIMESTAMP.fullmatch(value) else "must be yyyy-MM-ddThh:mm:ss.sssZ"
    if name == "gov-client-mac-addresses":
        macs = _items(value)
        if not macs or not all(MAC.fullmatch(mac) for mac in macs):
            return "must list the device's MAC addresses, each percent encoded"
        return None
    if name == "gov-client-timezone":
        return None if TIMEZONE.fullmatch(value) else "must be UTC±hh:mm"
    if name == "gov-client-user-agent":
        fields = _pairs(value)
        if fields is None:
            return "must be a percent-encoded key-value structure"
        if not fields.get("os-family") or not fields.get("os-version"):
            return "must give os-family and os-version"
        unknown = set(fields) - {"os-family", "os-version", "device-manufacturer", "device-model"}
        return f"unknown key {sorted(unknown)[0]!r}" if unknown else None
    if name == "gov-client-user-ids":
        ids = _pairs(value)
        if ids is None:
            return "must be a percent-encoded key-value structure"
        return None if any(ids.values()) else "must identify the user (e.g. os=<user>)"
    if name == "gov-vendor-license-ids":
        licences = _pairs(value)
        if licences is None:
            return "must be a percent-encoded key-value structure"
        return None if all(HASH.fullmatch(v) for v in licences.values()) else "licence keys must be hashed"
    if name == "gov-vendor-product-name":
        if not value:
            return "must name the product"
        return None if _encoded(value) else "must be percent encoded"
    if name == "gov-vendor-version":
        versions = _pairs(value)
        if versions is None:
            return "must be a percent-encoded key-value structure"
        return None if versions and all(versions.values()) else "must give software=version"
    return None


def problems(headers: Mapping[str, str]) -> list[Problem]:
    """Every missing or malformed header, in the specification's order."""
    given = {name.lower(): value for name, value in headers.items()}
    found: list[Problem] = []
    for name in REQUIRED:
        if name not in given:
            found.append(("MISSING_HEADER", name, "Header required"))
            continue
        wrong = _check(name, given[name])
        if wrong is not None:
            found.append(("INVALID_HEADER", name, wrong))
    return found


def error_body(found: list[Problem]) -> dict[str, object]:
    """HMRC's answer for invalid fraud-prevention headers."""
    return {
        "specVersion": SPEC_VERSION,
        "code": "INVALID_HEADERS",
        "message": "At least 1 header is invalid",
        "errors": [{"code": code, "message": message, "headers": [name]} for code, name, message in found],
    }
