"""Apache Airflow provider for Quiver: run SQL jobs on a Quiver cluster from DAGs.

* :class:`~quiver_provider.hooks.quiver.QuiverHook` and the ``quiver``
  connection type (host, port, token as the password);
* :class:`~quiver_provider.operators.QuiverSQLOperator` (blocking or deferrable);
* :class:`~quiver_provider.sensors.QuiverJobSensor` and
  :class:`~quiver_provider.sensors.QuiverPrefixSensor` (data arriving in S3).

Airflow finds this provider through the ``apache_airflow_provider`` entry
point, which names :func:`get_provider_info`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "quiver-lake"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # imported from a source tree
    __version__ = "0.0.0"


def get_provider_info() -> dict:
    """What Airflow's providers manager reads about this provider."""
    return {
        "package-name": DISTRIBUTION,
        "name": "Quiver",
        "description": "Run SQL jobs on a Quiver cluster (a distributed SQL engine on Apache Arrow).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Quiver",
                "external-doc-url": "https://github.com/quiver-data/quiver",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "Quiver", "python-modules": ["quiver_provider.hooks.quiver"]}],
        "operators": [{"integration-name": "Quiver", "python-modules": ["quiver_provider.operators.quiver"]}],
        "sensors": [{"integration-name": "Quiver", "python-modules": ["quiver_provider.sensors.quiver"]}],
        "triggers": [{"integration-name": "Quiver", "python-modules": ["quiver_provider.triggers.quiver"]}],
        "connection-types": [
            {
                "hook-class-name": "quiver_provider.hooks.quiver.QuiverHook",
                "hook-name": "Quiver",
                "connection-type": "quiver",
            }
        ],
        "extra-links": ["quiver_provider.operators.quiver.QuiverJobLink"],
    }
