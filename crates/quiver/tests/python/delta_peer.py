#!/usr/bin/env python3
"""The other Delta writer and reader in Quiver's Delta tests: the Python
`deltalake` package (delta-rs) from PyPI.

    delta_peer.py make_history URI      writes versions 0-3 (see below)
    delta_peer.py read URI [VERSION]    prints the table's rows as JSON, sorted (by id when there is one)
    delta_peer.py version URI           prints the latest version
    delta_peer.py deletion_vectors URI  writes a table whose protocol needs deletion vectors

Storage settings come from TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY.
"""
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake


def storage_options():
    return {
        "AWS_ENDPOINT_URL": os.environ["TEST_S3_ENDPOINT"],
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


def make_history(uri):
    """v0: six orders partitioned by region; v1: two more; v2: a new column
    `score`; v3: order 2 deleted."""
    opts = storage_options()
    write_deltalake(
        uri,
        pa.table({
            "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "region": ["EU", "EU", "US", "US", "APAC", "APAC"],
            "amount": pa.array([10.5, 20.0, 30.25, 40.0, 50.0, 60.75], pa.float64()),
        }),
        partition_by=["region"],
        storage_options=opts,
    )
    write_deltalake(
        uri,
        pa.table({
            "id": pa.array([7, 8], pa.int64()),
            "region": ["EU", "US"],
            "amount": pa.array([70.0, 80.0], pa.float64()),
        }),
        mode="append",
        storage_options=opts,
    )
    write_deltalake(
        uri,
        pa.table({
            "id": pa.array([9], pa.int64()),
            "region": ["EU"],
            "amount": pa.array([90.0], pa.float64()),
            "score": pa.array([0.5], pa.float64()),
        }),
        mode="append",
        schema_mode="merge",
        storage_options=opts,
    )
    DeltaTable(uri, storage_options=opts).delete("id = 2")
    print(json.dumps({"version": DeltaTable(uri, storage_options=opts).version()}))


def read(uri, version=None):
    dt = DeltaTable(uri, version=None if version is None else int(version), storage_options=storage_options())
    rows = dt.to_pyarrow_table().to_pylist()
    rows.sort(key=lambda r: (r["id"],) if "id" in r else tuple(str(v) for v in r.values()))
    print(json.dumps(rows))


def deletion_vectors(uri):
    opts = storage_options()
    write_deltalake(uri, pa.table({"id": pa.array([1, 2], pa.int64())}), storage_options=opts)
    from deltalake import TableFeatures

    DeltaTable(uri, storage_options=opts).alter.add_feature(TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    print(json.dumps({"version": DeltaTable(uri, storage_options=opts).version()}))


if __name__ == "__main__":
    command, uri, *rest = sys.argv[1:]
    if command == "make_history":
        make_history(uri)
    elif command == "read":
        read(uri, *rest)
    elif command == "version":
        print(DeltaTable(uri, storage_options=storage_options()).version())
    elif command == "deletion_vectors":
        deletion_vectors(uri)
    else:
        sys.exit(f"unknown command {command}")
    # delta-rs's runtime can abort while the interpreter tears down; the work
    # is done and printed, so leave without teardown.
    sys.stdout.flush()
    os._exit(0)
