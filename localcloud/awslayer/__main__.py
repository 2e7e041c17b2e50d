"""Run the layer: ``python -m localcloud.awslayer --port P --moto-port M --state DIR``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
from pathlib import Path

from .. import procs
from . import core
from .core import make_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localcloud.awslayer", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="where the AWS clients connect")
    parser.add_argument("--moto-port", type=int, required=True, help="moto's internal port")
    parser.add_argument("--state", type=Path, required=True, help="the local cloud's state dir")
    parser.add_argument("--boxes", action="store_true",
                        help="every EC2 instance is a real box (localcloud/instances.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server = make_server(args.port, args.moto_port, args.state, boxes=args.boxes)
    threading.Thread(target=warm_up, args=(server.layer,), daemon=True).start()
    server.serve_forever()


def warm_up(layer) -> None:
    """Load botocore's models and the layer's clients before the first call needs them."""
    with contextlib.suppress(Exception):
        procs.wait_for_port(layer.moto.port, 30)
        core.service_model("ec2")
        for service in ("ec2", "iam", "sts"):
            layer.moto.client(service, "us-east-2" if service == "ec2" else "us-east-1")
        # moto builds a region's backend (instance types, AMIs) on its first call there:
        # seconds that the first launch would otherwise wait for.
        layer.moto.client("ec2", "us-east-2").describe_availability_zones()


if __name__ == "__main__":
    main()
