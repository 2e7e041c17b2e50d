"""InstanceInitiatedShutdownBehavior as EC2 keeps it (what a box's own poweroff does).

"By default, when you initiate a shutdown from an Amazon EBS backed instance
(using a command such as shutdown or poweroff), the instance stops. You can
change this behavior so that the instance terminates instead by changing the
InstanceInitiatedShutdownBehavior attribute for the instance. You can change
this attribute while the instance is running or stopped." (EC2 User Guide,
"Change instance initiated shutdown behavior"). It is set at launch
(RunInstances or its launch template: "Indicates whether an instance stops or
terminates when you initiate shutdown from the instance ... Default: stop",
botocore RunInstancesRequest and RequestLaunchTemplateData) or later with
ModifyInstanceAttribute.

moto keeps RunInstances' own value, but not a launch template's, and its
ModifyInstanceAttribute takes the attribute only in the ``Attribute``/``Value``
form, not as boto3 sends ``InstanceInitiatedShutdownBehavior={"Value": ...}``
(it answers success and changes nothing). The layer fills both gaps, so that
DescribeInstanceAttribute says what a box's poweroff will do
(localcloud/instances.py applies it).
"""

from __future__ import annotations

from . import core, launch

VALUES = ("stop", "terminate")


@core.after("ec2", "RunInstances")
def keep_the_templates_behaviour(layer: core.Layer, call: core.Call,
                                 reply: core.Reply) -> None:
    wanted = launch.launch_spec(layer, call).get("InstanceInitiatedShutdownBehavior")
    if wanted not in VALUES or call.params().get("InstanceInitiatedShutdownBehavior"):
        return  # the default, or RunInstances' own value, which moto keeps
    ec2 = layer.moto.client("ec2", call.region)
    for item in core.parse_xml(reply.body).iter(core.q("instanceId")):
        ec2.modify_instance_attribute(InstanceId=item.text,
                                      Attribute="instanceInitiatedShutdownBehavior",
                                      Value=wanted)


@core.before("ec2", "ModifyInstanceAttribute")
def behaviour_as_moto_takes_it(layer: core.Layer, call: core.Call) -> None:
    value = call.form.get("InstanceInitiatedShutdownBehavior.Value")
    if value is None:
        return
    if value not in VALUES:
        # botocore's enum ShutdownBehavior: stop | terminate. AWS's text for another
        # value was not found; the layer's own.
        raise core.AwsError("InvalidParameterValue",
                            f"Value ({value}) for parameter instanceInitiatedShutdownBehavior "
                            "is invalid. Expected: 'stop', 'terminate'.")
    del call.form["InstanceInitiatedShutdownBehavior.Value"]
    call.form["Attribute"] = "instanceInitiatedShutdownBehavior"
    call.form["Value"] = value
    call.notes["form_changed"] = True

