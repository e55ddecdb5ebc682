"""Arrow Flight SQL to the scheduler, through ADBC.

The scheduler serves Flight SQL on its one port, with the same token as the
REST API; each statement runs on the cluster as a job of source ``flight_sql``.
Any ADBC or Flight SQL client works the same way:

>>> from quiver_client.flightsql import connect
>>> with connect("http://localhost:50050", token=None) as conn:     # doctest: +SKIP
...     with conn.cursor() as cur:
...         cur.execute("SELECT 1 AS one")
...         cur.fetch_arrow_table()
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql

from .client import CA_FILE_ENV


def flight_uri(base_url: str) -> str:
    """The Flight SQL URI of a scheduler's base URL.

    >>> flight_uri("http://scheduler:50050")
    'grpc://scheduler:50050'
    >>> flight_uri("https://q.example.com:443")
    'grpc+tls://q.example.com:443'
    """
    parts = urlsplit(base_url)
    scheme = "grpc+tls" if parts.scheme == "https" else "grpc"
    return f"{scheme}://{parts.netloc}"


def connect(base_url: str, token: str | None = None) -> flightsql.Connection:
    """A DB-API connection (PEP 249, with Arrow fetches) to the scheduler at
    ``base_url``, sending ``token`` as a bearer token when given."""
    options: dict[str, str] = {}
    if token:
        options[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    # Over TLS, the CA of QUIVER_CA_FILE as the REST client trusts it.
    ca_file = os.environ.get(CA_FILE_ENV)
    if ca_file and urlsplit(base_url).scheme == "https":
        with open(ca_file, encoding="ascii") as pem:
            options[adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = pem.read()
    return flightsql.connect(flight_uri(base_url), db_kwargs=options)
