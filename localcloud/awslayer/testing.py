"""A moto server behind an in-process layer, for the layer's tests (127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import procs
from ..moto import AMIS
from . import switches
from .core import make_server


class LocalAws:
    """moto (a subprocess) and the layer (a thread) on free ports, with its own state dir."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="awslayer-test-"))
        self.moto_port = procs.free_port()
        server = Path(sys.executable).with_name("moto_server")
        self.moto_pid = procs.start_detached(
            [str(server), "-H", "127.0.0.1", "-p", str(self.moto_port)], self.state / "moto.log",
            env={"PATH": "/usr/bin:/bin", "MOTO_AMIS_PATH": str(AMIS)})
        self.moto_start = procs.proc_start_time(self.moto_pid)
        self.server = make_server(0, self.moto_port, self.state)
        self.port = self.server.server_address[1]
        self.layer = self.server.layer  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        procs.wait_for_port(self.moto_port, 30)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str, region: str = "us-east-2", key: str = "localcloud",
               secret: str = "localcloud"):  # noqa: S107 (the emulator's fake key)
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service, region_name=region, endpoint_url=self.endpoint, aws_access_key_id=key,
            aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))

    def reset(self) -> None:
        """A new account: moto emptied, the layer's memory and switches back to defaults."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()
        switches.path(self.state).unlink(missing_ok=True)

    def set(self, **values: Any) -> None:
        with switches.edit(self.state) as data:
            data.update(json.loads(json.dumps(values)))

    def user(self, name: str, policy: dict[str, Any]) -> tuple[str, str]:
        """An IAM user with an inline policy; its access key id and secret."""
        iam = self.client("iam")
        with contextlib.suppress(Exception):
            iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="test", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        procs.stop(self.moto_pid, self.moto_start)
        shutil.rmtree(self.state, ignore_errors=True)


@contextlib.contextmanager
def local_aws() -> Iterator[LocalAws]:
    aws = LocalAws()
    try:
        yield aws
    finally:
        aws.close()


def fixtures():
    """pytest fixtures for a test module: ``aws`` (one per module), reset before each test."""
    import pytest

    @pytest.fixture(scope="module")
    def aws() -> Iterator[LocalAws]:
        with local_aws() as cloud:
            yield cloud

    @pytest.fixture(autouse=True)
    def fresh_account(aws: LocalAws) -> None:
        aws.reset()

    return aws, fresh_account


# What a spot launch of the stand-in Deep Learning AMI looks like, as spotbox sends it.
DLAMI = "ami-0dl22b0000000002"


def spot_options(kind: str = "one-time", behaviour: str = "terminate") -> dict[str, Any]:
    return {"MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": kind, "InstanceInterruptionBehavior": behaviour}}


def error_of(call, *args, **kwargs) -> dict[str, Any]:
    """The botocore-parsed Error (plus HTTP status) of a call that must fail."""
    from botocore.exceptions import ClientError

    try:
        call(*args, **kwargs)
    except ClientError as error:
        return {**error.response["Error"],
                "Status": error.response["ResponseMetadata"]["HTTPStatusCode"]}
    raise AssertionError(f"{call.__name__} succeeded; an AWS error was expected")


def run_dlami(ec2, **extra: Any) -> dict[str, Any]:
    """RunInstances of the stand-in Deep Learning AMI (one instance), its first instance."""
    args = {"ImageId": DLAMI, "MinCount": 1, "MaxCount": 1, "InstanceType": "g4dn.xlarge"}
    return ec2.run_instances(**{**args, **extra})["Instances"][0]
