"""HMRC fraud-prevention headers for the ``BATCH_PROCESS_DIRECT`` connection method.

HMRC requires MTD software to send ``Gov-Client-*`` and ``Gov-Vendor-*`` headers with every API
call (the Delivery of Tax Information through Software (Ancillary Metadata) Regulations 2019,
specification v3.x). The ingest is a server-side batch process that calls HMRC itself, with no
person's device in between, so its connection method is ``BATCH_PROCESS_DIRECT``; the
"originating device" is the machine the batch runs on. For that method the specification asks for
exactly :data:`REQUIRED_HEADERS`:

* ``Gov-Client-Connection-Method`` - ``BATCH_PROCESS_DIRECT``;
* ``Gov-Client-Device-ID`` - a UUID made once per installation and kept (``DOSSIER_HMRC_DEVICE_ID``);
* ``Gov-Client-Local-IPs`` and ``Gov-Client-Local-IPs-Timestamp`` - the machine's IPv4/IPv6
  addresses, collected immediately before each request, and when (``yyyy-MM-ddThh:mm:ss.sssZ``);
* ``Gov-Client-MAC-Addresses`` - the machine's MAC addresses;
* ``Gov-Client-Timezone`` - the machine's offset as ``UTC±hh:mm``;
* ``Gov-Client-User-Agent`` - key-value ``os-family``, ``os-version``, ``device-manufacturer``,
  ``device-model``;
* ``Gov-Client-User-IDs`` - key-value, ``os`` = the operating-system user running the batch;
* ``Gov-Vendor-License-IDs`` - key-value of *hashed* licence keys (SHA-256 here; no pair when the
  installation has none);
* ``Gov-Vendor-Product-Name`` and ``Gov-Vendor-Version`` (key-value ``software=version``).

Encoding follows the specification: US-ASCII, every key and every value percent-encoded (RFC 3986),
separators (``=``, ``&``, ``,``) never encoded:

>>> key_values({"os-family": "Linux", "device-model": "Virtual Machine"})
'os-family=Linux&device-model=Virtual%20Machine'
>>> listed(["10.1.2.3", "fc00::1"])
'10.1.2.3,fc00%3A%3A1'
>>> utc_offset(dt.timedelta(hours=-3, minutes=-30))
'UTC-03:30'
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import importlib.metadata
import platform
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

CONNECTION_METHOD = "BATCH_PROCESS_DIRECT"
PRODUCT_NAME = "sme-dossier"

REQUIRED_HEADERS = (
    "Gov-Client-Connection-Method",
    "Gov-Client-Device-ID",
    "Gov-Client-Local-IPs",
    "Gov-Client-Local-IPs-Timestamp",
    "Gov-Client-MAC-Addresses",
    "Gov-Client-Timezone",
    "Gov-Client-User-Agent",
    "Gov-Client-User-IDs",
    "Gov-Vendor-License-IDs",
    "Gov-Vendor-Product-Name",
    "Gov-Vendor-Version",
)
"""The headers HMRC's specification requires for ``BATCH_PROCESS_DIRECT``, in its order."""


def encode(value: str) -> str:
    """Percent-encode one key or value: everything but RFC 3986 unreserved characters."""
    return quote(value, safe="")


def key_values(pairs: Mapping[str, str]) -> str:
    """HMRC's key-value structure: ``k1=v1&k2=v2``, keys and values percent-encoded."""
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in pairs.items())


def listed(values: Iterable[str]) -> str:
    """HMRC's list structure: ``v1,v2``, values percent-encoded."""
    return ",".join(encode(v) for v in values)


def utc_offset(offset: dt.timedelta | None) -> str:
    """``UTC±hh:mm`` for a UTC offset."""
    minutes = int((offset or dt.timedelta()).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def timestamp(at: dt.datetime) -> str:
    """``yyyy-MM-ddThh:mm:ss.sssZ`` in UTC, milliseconds included."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def hashed_licence(key: str) -> str:
    """What HMRC receives for a licence key: its SHA-256, hex (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _software_version() -> str:
    try:
        return importlib.metadata.version(PRODUCT_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _interfaces() -> tuple[list[str], list[str]]:
    """(IP addresses, MAC addresses) of this machine, loopback left out."""
    import psutil

    ips: list[str] = []
    macs: list[str] = []
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                ip = address.address.split("%", 1)[0]
                if name != "lo" and not ip.startswith(("127.", "::1")):
                    ips.append(ip)
            elif address.family == psutil.AF_LINK and address.address not in ("", "00:00:00:00:00:00"):
                macs.append(address.address.lower())
    if not ips:  # a machine with loopback only (an isolated network namespace) still has that
        ips = ["127.0.0.1"]
    if not macs:
        node = f"{uuid.getnode():012x}"
        macs = [":".join(node[i : i + 2] for i in range(0, 12, 2))]
    return list(dict.fromkeys(ips)), list(dict.fromkeys(macs))


def _dmi(name: str) -> str:
    try:
        return Path("/sys/class/dmi/id", name).read_text().strip()
    except OSError:
        return ""


def machine_user_agent() -> dict[str, str]:
    """``Gov-Client-User-Agent`` fields of this machine (empty where the machine does not say)."""
    return {
        "os-family": platform.system(),
        "os-version": platform.release(),
        "device-manufacturer": _dmi("sys_vendor"),
        "device-model": _dmi("product_name"),
    }


def fallback_device_id() -> str:
    """A stable UUID for this machine when the application passed none (derived from its node id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sme-dossier-device:{uuid.getnode()}"))


@dataclass(frozen=True)
class FraudPrevention:
    """The facts the headers carry; :meth:`headers` renders them for one request."""

    device_id: str
    licence_keys: Mapping[str, str] = field(default_factory=dict)
    """Licence keys by software name, as configured (sent hashed)."""
    product_name: str = PRODUCT_NAME
    version: str = field(default_factory=_software_version)
    user_id: str = field(default_factory=getpass.getuser)
    user_agent: Mapping[str, str] = field(default_factory=machine_user_agent)
    interfaces: Callable[[], tuple[list[str], list[str]]] = _interfaces
    """Reads (IPs, MACs) just before each request."""
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    @classmethod
    def of_this_machine(
        cls, device_id: str = "", licence_keys: Mapping[str, str] | None = None
    ) -> FraudPrevention:
        return cls(device_id or fallback_device_id(), dict(licence_keys or {}))

    def headers(self) -> dict[str, str]:
        """Every header of :data:`REQUIRED_HEADERS`, with values collected now."""
        ips, macs = self.interfaces()
        now = self.clock()
        return {
            "Gov-Client-Connection-Method": CONNECTION_METHOD,
            "Gov-Client-Device-ID": self.device_id,
            "Gov-Client-Local-IPs": listed(ips),
            "Gov-Client-Local-IPs-Timestamp": timestamp(now),
            "Gov-Client-MAC-Addresses": listed(macs),
            "Gov-Client-Timezone": utc_offset(dt.datetime.now().astimezone().utcoffset()),
            "Gov-Client-User-Agent": key_values(self.user_agent),
            "Gov-Client-User-IDs": key_values({"os": self.user_id}),
            "Gov-Vendor-License-IDs": key_values(
                {name: hashed_licence(key) for name, key in self.licence_keys.items()}
            ),
            "Gov-Vendor-Product-Name": encode(self.product_name),
            "Gov-Vendor-Version": key_values({self.product_name: self.version}),
        }
