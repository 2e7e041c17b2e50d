"""The AWS layer's plumbing: errors in AWS's shapes, query forms, pass-through."""

from __future__ import annotations

import urllib.request

import botocore.session
import pytest
from botocore.parsers import create_parser

from localcloud.awslayer import core
from localcloud.awslayer.testing import DLAMI, error_of, fixtures

aws, fresh_account = fixtures()


def _call(service: str, protocol: str) -> core.Call:
    return core.Call("POST", "/", {}, b"", service, "us-east-2", "localcloud", "Action",
                     protocol=protocol)


@pytest.mark.parametrize(("service", "protocol", "botocore_protocol"), [
    ("ec2", "ec2", "ec2"), ("servicequotas", "json", "json"), ("iam", "query", "query"),
    ("sts", "query", "query")])
def test_errors_parse_in_botocore_as_from_aws(service, protocol, botocore_protocol) -> None:
    reply = core.error_reply(_call(service, protocol),
                             core.AwsError("SomeCode", "Some <message> & more", 403))
    parsed = create_parser(botocore_protocol).parse(
        {"status_code": reply.status, "headers": reply.headers, "body": reply.body},
        None)
    assert parsed["Error"]["Code"] == "SomeCode"
    assert parsed["Error"]["Message"] == "Some <message> & more"
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_ec2_error_is_the_response_errors_shape() -> None:
    body = core.error_reply(_call("ec2", "ec2"), core.AwsError("X", "y")).body.decode()
    assert "<Response><Errors><Error><Code>X</Code><Message>y</Message></Error></Errors>" in body
    assert "<RequestID>" in body


def test_ec2_query_form_round_trips_through_botocore() -> None:
    params = {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 2,
              "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50}}],
              "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {
                  "SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}},
              "TagSpecifications": [{"ResourceType": "instance",
                                     "Tags": [{"Key": "a", "Value": "b"}]}],
              "SecurityGroupIds": ["sg-1", "sg-2"], "EbsOptimized": True}
    form = core.ec2_form("RunInstances", params)
    assert form["BlockDeviceMapping.1.Ebs.VolumeSize"] == "50"
    assert core.ec2_params("RunInstances", form) == params


def test_answers_moto_gives_pass_unchanged(aws) -> None:
    direct = botocore.session.get_session().create_client(
        "ec2", region_name="us-east-2", endpoint_url=f"http://127.0.0.1:{aws.moto_port}",
        aws_access_key_id="localcloud", aws_secret_access_key="localcloud")
    through = aws.client("ec2")
    assert through.describe_regions()["Regions"] == direct.describe_regions()["Regions"]
    assert (through.describe_key_pairs()["KeyPairs"] == direct.describe_key_pairs()["KeyPairs"])
    # moto's own errors keep their code.
    assert error_of(through.describe_instances, InstanceIds=["i-00000000000000000"])[
        "Code"] == "InvalidInstanceID.NotFound"


def test_unsigned_moto_api_passes(aws) -> None:
    with urllib.request.urlopen(f"{aws.endpoint}/moto-api/", timeout=10) as page:
        assert page.status == 200


def test_lenient_is_plain_moto(aws) -> None:
    ec2 = aws.client("ec2")
    small_root = [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50}}]
    assert error_of(ec2.run_instances, ImageId=DLAMI, MinCount=1, MaxCount=1,
                    BlockDeviceMappings=small_root)["Code"] == "InvalidBlockDeviceMapping"
    aws.set(strict=False)
    ec2.run_instances(ImageId=DLAMI, MinCount=1, MaxCount=1, BlockDeviceMappings=small_root)
    assert ec2.describe_images(ImageIds=[DLAMI])["Images"][0]["BlockDeviceMappings"][0][
        "Ebs"]["VolumeSize"] == 15  # moto's own size


def test_a_fault_of_the_layer_is_an_internal_error_botocore_can_read(aws, monkeypatch) -> None:
    def broken(layer, call):
        raise RuntimeError("boom")

    monkeypatch.setitem(core.BEFORE, ("ec2", "DescribeKeyPairs"), [broken])
    error = error_of(aws.client("ec2").describe_key_pairs)
    assert (error["Code"], error["Status"]) == ("InternalError", 500)
    assert error["Message"] == "localcloud awslayer: RuntimeError: boom"


def test_a_chunked_request_body_reaches_moto_whole(aws) -> None:
    import http.client

    body = b"Action=DescribeRegions&Version=2016-11-15"
    conn = http.client.HTTPConnection("127.0.0.1", aws.port, timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
    conn.putheader("Authorization", "AWS4-HMAC-SHA256 Credential=localcloud/20260101/"
                   "us-east-2/ec2/aws4_request, SignedHeaders=host, Signature=0")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for piece in (body[:10], body[10:]):
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    answer = conn.getresponse()
    assert answer.status == 200
    assert b"<regionName>us-east-2</regionName>" in answer.read()
