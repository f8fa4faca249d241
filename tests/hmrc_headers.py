"""A literal, specification-conforming set of HMRC fraud-prevention headers for ``BATCH_PROCESS_DIRECT``.

Tests that speak to the sandbox tax provider by hand send these (the connector makes its own); they
are written out here, not produced by the code under test.
"""

from __future__ import annotations

BATCH_HEADERS: dict[str, str] = {
    "Gov-Client-Connection-Method": "BATCH_PROCESS_DIRECT",
    "Gov-Client-Device-ID": "beec798b-b366-47fa-b1f8-92cede14a1ce",
    "Gov-Client-Local-IPs": "10.1.2.3,fc00%3A%3A1",
    "Gov-Client-Local-IPs-Timestamp": "2026-11-25T10:30:05.123Z",
    "Gov-Client-MAC-Addresses": "ea%3A43%3A1a%3A5d%3A21%3A45",
    "Gov-Client-Timezone": "UTC+00:00",
    "Gov-Client-User-Agent": "os-family=Linux&os-version=6.1.0&device-manufacturer=Dell%20Inc.&device-model=R640",
    "Gov-Client-User-IDs": "os=dossier",
    "Gov-Vendor-License-IDs": "",
    "Gov-Vendor-Product-Name": "sme-dossier",
    "Gov-Vendor-Version": "sme-dossier=0.1.0",
}
