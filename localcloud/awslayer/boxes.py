"""The layer's side of "instances are boxes" (localcloud/instances.py does the boxes)."""

from __future__ import annotations

import threading
from typing import Any

from ..registry import Registry
from . import core, spot


def instances_for(layer: core.Layer, port: int, **options: Any):
    """An Instances for this layer: moto to look, the layer itself (port) to act."""
    from ..instances import Instances

    clients: dict[str, Any] = {}
    lock = threading.Lock()

    def through_layer(region: str):
        with lock:
            if region not in clients:
                import boto3
                from botocore.config import Config

                clients[region] = boto3.session.Session().client(
                    "ec2", region_name=region, endpoint_url=f"http://127.0.0.1:{port}",
                    aws_access_key_id=core.ADMIN_KEY, aws_secret_access_key=core.ADMIN_KEY,
                    config=Config(retries={"max_attempts": 1}))
            return clients[region]

    def lifecycle(instance_id: str) -> str:
        return "spot" if instance_id in spot.instance_ids(layer) else "on-demand"

    return Instances(Registry(layer.state_dir), lambda region: layer.moto.client("ec2", region),
                     through_layer, lifecycle, **options)
