"""Rule 5: spot requests of RunInstances launches and the rules of their lifecycle."""

from __future__ import annotations

import time

import pytest

from localcloud.awslayer.testing import DLAMI, error_of, fixtures, run_dlami, spot_options

aws, fresh_account = fixtures()

REQUEST_TAGS = [{"ResourceType": "spot-instances-request",
                 "Tags": [{"Key": "spotbox:box", "Value": "course"}]}]


@pytest.fixture(autouse=True)
def room_for_spot(aws, fresh_account) -> None:
    aws.set(quotas={"L-3819A6DF": 64}, spot_relaunch_delay=0.2)


def requests(ec2, **filters) -> list[dict]:
    flts = [{"Name": k.replace("_", "-"), "Values": v if isinstance(v, list) else [v]}
            for k, v in filters.items()]
    return ec2.describe_spot_instance_requests(Filters=flts)["SpotInstanceRequests"]


def state_of(ec2, request_id: str) -> dict:
    return ec2.describe_spot_instance_requests(
        SpotInstanceRequestIds=[request_id])["SpotInstanceRequests"][0]


def instance(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def persistent_template(ec2) -> None:
    ec2.create_launch_template(LaunchTemplateName="box", LaunchTemplateData={
        "ImageId": DLAMI, "InstanceType": "g4dn.xlarge",
        "InstanceMarketOptions": spot_options("persistent", "stop"),
        "TagSpecifications": REQUEST_TAGS})


@pytest.mark.parametrize("via_template", [False, True])
def test_persistent_with_terminate_is_refused(aws, via_template) -> None:
    ec2 = aws.client("ec2")
    if via_template:
        ec2.create_launch_template(LaunchTemplateName="bad", LaunchTemplateData={
            "InstanceMarketOptions": spot_options("persistent", "terminate")})
        error = error_of(run_dlami, ec2, LaunchTemplate={"LaunchTemplateName": "bad"})
    else:
        market = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "persistent"}}
        error = error_of(run_dlami, ec2, InstanceMarketOptions=market)  # terminate: the default
    assert error["Code"] == "InvalidParameterCombination"
    assert error["Message"] == ("The terminate InstanceInterruptionBehavior is not supported "
                                "when requestType is set to persistent.")


def test_one_time_with_stop_is_refused(aws) -> None:
    error = error_of(run_dlami, aws.client("ec2"),
                     InstanceMarketOptions=spot_options("one-time", "stop"))
    assert error["Code"] == "InvalidParameterCombination"


def test_a_spot_launch_has_a_request_and_shows_as_spot(aws) -> None:
    ec2 = aws.client("ec2")
    launched = run_dlami(ec2, InstanceMarketOptions=spot_options(),
                         TagSpecifications=REQUEST_TAGS)
    assert launched["InstanceLifecycle"] == "spot"
    request_id = launched["SpotInstanceRequestId"]
    assert request_id.startswith("sir-")
    shown = instance(ec2, launched["InstanceId"])
    assert (shown["InstanceLifecycle"], shown["SpotInstanceRequestId"]) == ("spot", request_id)
    request = state_of(ec2, request_id)
    assert request["State"] == "active"
    assert request["Status"]["Code"] == "fulfilled"
    assert request["Type"] == "one-time"
    assert request["InstanceId"] == launched["InstanceId"]
    assert request["LaunchSpecification"]["InstanceType"] == "g4dn.xlarge"
    assert request["LaunchedAvailabilityZone"] == "us-east-2a"
    assert request["Tags"] == [{"Key": "spotbox:box", "Value": "course"}]


def test_a_launch_template_spot_instance_is_spot(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    launched = ec2.run_instances(MinCount=1, MaxCount=1,
                                 LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    shown = instance(ec2, launched["InstanceId"])
    assert shown["InstanceLifecycle"] == "spot"
    request = state_of(ec2, shown["SpotInstanceRequestId"])
    assert (request["Type"], request["InstanceInterruptionBehavior"]) == ("persistent", "stop")


def test_describe_instances_filters_by_lifecycle_and_request(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    spot = ec2.run_instances(MinCount=1, MaxCount=1,
                             LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    run_dlami(ec2)  # on-demand
    found = ec2.describe_instances(Filters=[
        {"Name": "instance-lifecycle", "Values": ["spot"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
    assert [i["InstanceId"] for r in found for i in r["Instances"]] == [spot["InstanceId"]]
    request_id = instance(ec2, spot["InstanceId"])["SpotInstanceRequestId"]
    found = ec2.describe_instances(Filters=[
        {"Name": "spot-instance-request-id", "Values": [request_id]}])["Reservations"]
    assert [i["InstanceId"] for r in found for i in r["Instances"]] == [spot["InstanceId"]]


def test_on_demand_launches_have_no_request(aws) -> None:
    ec2 = aws.client("ec2")
    launched = run_dlami(ec2)
    assert "InstanceLifecycle" not in instance(ec2, launched["InstanceId"])
    assert requests(ec2) == []


def test_filters(aws) -> None:
    ec2 = aws.client("ec2")
    tagged = run_dlami(ec2, InstanceMarketOptions=spot_options(), TagSpecifications=REQUEST_TAGS)
    plain = run_dlami(ec2, InstanceMarketOptions=spot_options())

    def ids(found):
        return sorted(r["InstanceId"] for r in found)

    assert ids(ec2.describe_spot_instance_requests(Filters=[
        {"Name": "tag:spotbox:box", "Values": ["course"]}])["SpotInstanceRequests"]) == [
        tagged["InstanceId"]]
    assert ids(requests(ec2, tag_key="spotbox:box")) == [tagged["InstanceId"]]
    assert ids(requests(ec2, instance_id=plain["InstanceId"])) == [plain["InstanceId"]]
    assert ids(requests(ec2, state=["active"])) == sorted([tagged["InstanceId"],
                                                           plain["InstanceId"]])
    assert requests(ec2, state=["open", "disabled"]) == []
    assert ids(requests(ec2, spot_instance_request_id=plain["SpotInstanceRequestId"])) == [
        plain["InstanceId"]]


def test_one_time_cannot_stop_and_closes_when_terminated(aws) -> None:
    ec2 = aws.client("ec2")
    launched = run_dlami(ec2, InstanceMarketOptions=spot_options())
    error = error_of(ec2.stop_instances, InstanceIds=[launched["InstanceId"]])
    assert error["Code"] == "UnsupportedOperation"
    assert error["Message"] == (
        f"You can't stop the Spot Instance '{launched['InstanceId']}' because it is associated "
        "with a one-time Spot Instance request. You can only stop Spot Instances associated "
        "with persistent Spot Instance requests.")
    ec2.terminate_instances(InstanceIds=[launched["InstanceId"]])
    request = state_of(ec2, launched["SpotInstanceRequestId"])
    assert (request["State"], request["Status"]["Code"]) == ("closed",
                                                             "instance-terminated-by-user")


def test_the_type_of_a_spot_instance_cannot_change(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    launched = ec2.run_instances(MinCount=1, MaxCount=1,
                                 LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    ec2.stop_instances(InstanceIds=[launched["InstanceId"]])
    error = error_of(ec2.modify_instance_attribute, InstanceId=launched["InstanceId"],
                     InstanceType={"Value": "g5.xlarge"})
    assert error["Code"] == "UnsupportedOperation"
    on_demand = run_dlami(ec2)["InstanceId"]
    ec2.stop_instances(InstanceIds=[on_demand])
    ec2.modify_instance_attribute(InstanceId=on_demand, InstanceType={"Value": "g5.xlarge"})


def test_persistent_stop_start_disables_and_reactivates(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    launched = ec2.run_instances(MinCount=1, MaxCount=1,
                                 LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    request_id = instance(ec2, launched["InstanceId"])["SpotInstanceRequestId"]
    ec2.stop_instances(InstanceIds=[launched["InstanceId"]])
    request = state_of(ec2, request_id)
    assert (request["State"], request["Status"]["Code"]) == ("disabled",
                                                             "instance-stopped-by-user")
    ec2.start_instances(InstanceIds=[launched["InstanceId"]])
    assert state_of(ec2, request_id)["State"] == "active"


def test_terminating_a_persistent_instance_reopens_and_relaunches(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    first = ec2.run_instances(MinCount=1, MaxCount=1,
                              LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    request_id = instance(ec2, first["InstanceId"])["SpotInstanceRequestId"]
    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    assert state_of(ec2, request_id)["State"] == "open"
    deadline = time.monotonic() + 10
    while state_of(ec2, request_id)["State"] != "active":
        assert time.monotonic() < deadline, "the open request was not fulfilled again"
        time.sleep(0.1)
    replacement = state_of(ec2, request_id)["InstanceId"]
    assert replacement != first["InstanceId"]
    shown = instance(ec2, replacement)
    assert shown["State"]["Name"] in ("pending", "running")
    assert (shown["InstanceLifecycle"], shown["SpotInstanceRequestId"]) == ("spot", request_id)
    assert shown["InstanceType"] == "g4dn.xlarge"


def test_cancel_then_terminate_launches_nothing_new(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    launched = ec2.run_instances(MinCount=1, MaxCount=1,
                                 LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    request_id = instance(ec2, launched["InstanceId"])["SpotInstanceRequestId"]
    answer = ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[request_id])
    assert answer["CancelledSpotInstanceRequests"] == [
        {"SpotInstanceRequestId": request_id, "State": "cancelled"}]
    request = state_of(ec2, request_id)
    assert request["Status"]["Code"] == "request-canceled-and-instance-running"
    assert instance(ec2, launched["InstanceId"])["State"]["Name"] == "running"
    ec2.terminate_instances(InstanceIds=[launched["InstanceId"]])
    time.sleep(0.5)
    assert state_of(ec2, request_id)["State"] == "cancelled"
    running = ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
    assert running == []


def test_cancelling_a_disabled_request_terminates_its_stopped_instance(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    launched = ec2.run_instances(MinCount=1, MaxCount=1,
                                 LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    request_id = instance(ec2, launched["InstanceId"])["SpotInstanceRequestId"]
    ec2.stop_instances(InstanceIds=[launched["InstanceId"]])
    ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[request_id])
    assert state_of(ec2, request_id)["State"] == "cancelled"
    assert instance(ec2, launched["InstanceId"])["State"]["Name"] in ("shutting-down",
                                                                      "terminated")


def test_motos_own_requests_are_listed_beside(aws) -> None:
    ec2 = aws.client("ec2")
    run_dlami(ec2, InstanceMarketOptions=spot_options())
    own = ec2.request_spot_instances(LaunchSpecification={
        "ImageId": DLAMI, "InstanceType": "t3.micro"})["SpotInstanceRequests"][0]
    listed = {r["SpotInstanceRequestId"] for r in requests(ec2)}
    assert own["SpotInstanceRequestId"] in listed
    assert len(listed) == 2
    ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[own["SpotInstanceRequestId"]])


def interrupt(aws, instance_id: str, action: str) -> dict:
    from localcloud.awslayer import interrupt as layer_interrupt

    return layer_interrupt({"port": aws.port}, instance_id, action)


def test_an_interruption_that_stops_disables_the_request(aws) -> None:
    ec2 = aws.client("ec2")
    persistent_template(ec2)
    launched = ec2.run_instances(MinCount=1, MaxCount=1,
                                 LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    answer = interrupt(aws, launched["InstanceId"], "stop")
    assert answer["request"]["state"] == "disabled"
    request = state_of(ec2, answer["request"]["id"])
    assert (request["State"], request["Status"]["Code"]) == ("disabled",
                                                             "instance-stopped-no-capacity")
    assert instance(ec2, launched["InstanceId"])["State"]["Name"] in ("stopping", "stopped")


def test_an_interruption_that_terminates_reopens_a_persistent_request(aws) -> None:
    ec2 = aws.client("ec2")
    one_time = run_dlami(ec2, InstanceMarketOptions=spot_options())
    assert interrupt(aws, one_time["InstanceId"], "terminate")["request"]["state"] == "closed"
    persistent_template(ec2)
    launched = ec2.run_instances(MinCount=1, MaxCount=1,
                                 LaunchTemplate={"LaunchTemplateName": "box"})["Instances"][0]
    request_id = interrupt(aws, launched["InstanceId"], "terminate")["request"]["id"]
    assert state_of(ec2, request_id)["Status"]["Code"] == "instance-terminated-no-capacity"
    deadline = time.monotonic() + 10
    while state_of(ec2, request_id)["State"] != "active":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state_of(ec2, request_id)["InstanceId"] != launched["InstanceId"]


def test_the_layer_api_refuses_what_it_does_not_know(aws) -> None:
    import urllib.error
    import urllib.request

    for path, body in (("nothing", b"{}"), ("interrupt", b'{"instance_id": "i-1", '
                                                         b'"action": "explode"}')):
        request = urllib.request.Request(f"{aws.endpoint}/localcloud-awslayer/{path}",
                                         data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code in (400, 404)
