"""A recycled public address: the next instance gets an address an earlier one had.

"When you stop or terminate your instance, the public IP address is released
... We release the public IP address for your instance when it's stopped,
hibernated, or terminated" and a new one comes from "Amazon's pool of public
IPv4 addresses" (EC2 User Guide, using-instance-addressing.html, "Public IPv4
addresses"): an address a box of yours had may later be given to another
instance, whose host key differs. moto draws addresses at random, so
``python -m localcloud recycle-address IP`` makes the next RunInstances'
instance get IP (through an Elastic IP with that address, which moto allows).
"""

from __future__ import annotations

from . import core, switches


@core.after("ec2", "RunInstances")
def give_the_recycled_address(layer: core.Layer, call: core.Call,
                              reply: core.Reply) -> core.Reply:
    address = layer.switches().get("next_public_ip")
    if not address or reply.status != 200:
        return reply
    root = core.parse_xml(reply.body)
    instance_id = root.findtext(f".//{core.q('instanceId')}")
    if not instance_id:
        return reply
    with switches.edit(layer.state_dir) as data:  # once: the next launch only
        data.pop("next_public_ip", None)
    ec2 = layer.moto.client("ec2", call.region)
    allocation = ec2.allocate_address(Domain="vpc", Address=address)["AllocationId"]
    ec2.associate_address(InstanceId=instance_id, AllocationId=allocation)
    return reply
