"""Tags given when a launch template is created.

"TagSpecifications: The tags to apply to the launch template on creation. To
tag the launch template, the resource type must be launch-template" (botocore
CreateLaunchTemplateRequest.TagSpecifications). moto neither tags the template
with them nor keeps them apart: it adds them to version 1's
LaunchTemplateData, so version 1 differs from the data it was made with and
amazon.aws's ec2_launch_template adds a version 2 on the next run. The layer
takes them out of the request and tags the new template itself, as EC2 does.
"""

from __future__ import annotations

from . import core


@core.before("ec2", "CreateLaunchTemplate")
def hold_the_template_tags(layer: core.Layer, call: core.Call) -> None:
    call.notes["template_tags"] = [
        tag for spec in call.params().get("TagSpecifications") or []
        if spec.get("ResourceType") == "launch-template" for tag in spec.get("Tags") or []]
    for key in [k for k in call.form if k.startswith("TagSpecification.")]:
        del call.form[key]
        call.notes["form_changed"] = True


@core.after("ec2", "CreateLaunchTemplate")
def tag_the_new_template(layer: core.Layer, call: core.Call, reply: core.Reply) -> core.Reply:
    tags = call.notes.get("template_tags")
    if reply.status != 200 or not tags:
        return reply
    template_id = core.parse_xml(reply.body).findtext(f".//{core.q('launchTemplateId')}")
    if template_id:
        layer.moto.client("ec2", call.region).create_tags(Resources=[template_id], Tags=tags)
    return reply
