"""Tags given when a launch template is created.

"TagSpecifications: The tags to apply to the launch template on creation. To
tag the launch template, the resource type must be launch-template" (botocore
CreateLaunchTemplateRequest.TagSpecifications). moto neither tags the template
with them nor keeps them apart: it adds them to version 1's
LaunchTemplateData, so version 1 differs from the data it was made with and
amazon.aws's ec2_launch_template adds a version 2 on the next run. The layer
takes them out of the request and tags the new template itself, as EC2 does.

moto's DescribeLaunchTemplates then answers the tags the template was made with
(a copy taken at creation), not the tags it has: EC2 answers "Tags: The tags for
the launch template" (botocore LaunchTemplate.Tags), its current ones. The layer
answers them from the tag store (DescribeTags), which CreateTags and DeleteTags keep.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

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


@core.after("ec2", "DescribeLaunchTemplates")
def show_the_current_tags(layer: core.Layer, call: core.Call,
                          reply: core.Reply) -> core.Reply:
    if reply.status != 200:
        return reply
    root = core.parse_xml(reply.body)
    templates = [item for item in root.iter(core.q("item"))
                 if item.find(core.q("launchTemplateId")) is not None]
    if not templates:
        return reply
    ids = [item.findtext(core.q("launchTemplateId")) for item in templates]
    tags: dict[str, list[dict[str, str]]] = {}
    for tag in layer.moto.client("ec2", call.region).describe_tags(
            Filters=[{"Name": "resource-id", "Values": ids}])["Tags"]:
        tags.setdefault(tag["ResourceId"], []).append(tag)
    for item, template_id in zip(templates, ids, strict=True):
        for old in item.findall(core.q("tagSet")):
            item.remove(old)
        tag_set = ET.SubElement(item, "tagSet")
        for tag in tags.get(template_id, []):
            entry = ET.SubElement(tag_set, "item")
            ET.SubElement(entry, "key").text = tag["Key"]
            ET.SubElement(entry, "value").text = tag["Value"]
    return core.Reply(reply.status, core.xml_bytes(root), reply.headers)
