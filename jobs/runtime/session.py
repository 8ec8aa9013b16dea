"""Ray for one job: join the cluster that is named or running, else start a local one for the job's length."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, Protocol

from densecam_core.data.sources.locations import is_url


class SessionSettings(Protocol):
    address: str | None
    store: str


def _start_ray(ray: Any, address: str | None) -> bool:
    """Connect to the cluster, or start a local Ray; True when this job started Ray on this machine."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    # address="local": a new local Ray even when another cluster is registered on this machine
    # (/tmp/ray/ray_current_cluster), which ray.init() would otherwise join, refusing num_cpus
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
    return True


@contextlib.contextmanager
def ray_session(ray: Any, config: SessionSettings) -> Iterator[bool]:
    """Joined if Ray is up or an address is given, else started here and shut down at the end (yields
    whether this job started it), so no local Ray outlives the job that started it."""
    own = _start_ray(ray, config.address)
    try:
        yield own
    finally:
        if own:
            ray.shutdown()


def warn_local_store_on_cluster(nodes: list[dict[str, float]], store: str) -> None:
    """A local path is only one node's: say so before actors on other nodes write elsewhere."""
    if len(nodes) > 1 and not is_url(store):
        print(
            f"warning: the store {store!r} is a local path but the cluster has {len(nodes)} nodes; every node "
            "must see it (shared file system) or use an object-store URL such as s3://bucket/store",
            file=sys.stderr,
        )
