"""`--json PATH`: metadata, every timing record, and what was skipped."""

from __future__ import annotations

import json
import os

SCHEMA_VERSION = 1


def write(path: str, meta: dict, records: list, skipped: list, notes: list) -> None:
    doc = {
        "schema": SCHEMA_VERSION,
        "meta": meta,
        # device, torch and threads are repeated on each record so that one
        # record read alone still says where it came from.
        "records": [{**r, "device": meta["device"], "torch": meta["torch"], "threads": meta["threads"]}
                    for r in records],
        "skipped": skipped,
        "notes": notes,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
