"""Command line of the local cloud: ``python -m localcloud --help``."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import boxes, cleanup, images, instances, moto, rootfs, volumes
from .registry import Registry

PR_SET_CHILD_SUBREAPER = 36


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def cmd_rootfs(args, registry):
    print(rootfs.ensure_rootfs())


def cmd_moto_start(args, registry):
    record = moto.start(registry)
    if args.env:
        for key, value in moto.aws_env(record).items():
            print(f"export {key}={shlex.quote(value)}")
    else:
        _print({**record, "endpoint": moto.endpoint(record)})


def cmd_moto_stop(args, registry):
    moto.stop(registry)


def cmd_volume_create(args, registry):
    _print(volumes.create(registry, args.name, args.size, args.volume_id))


def cmd_volume_detach(args, registry):
    volumes.detach(registry, args.name)


def cmd_volume_grow(args, registry):
    volumes.grow(registry, args.name, args.size)


def cmd_volume_destroy(args, registry):
    volumes.destroy(registry, args.name)


def cmd_box_create(args, registry):
    attach = []
    for spec in args.attach or []:
        name, _, device = spec.partition(":")
        attach.append({"volume": name, "device": device or "/dev/xvdf"})
    pubkey = Path(args.pubkey).read_text(encoding="utf-8") if args.pubkey else None
    _print(boxes.create(registry, args.name, attach=attach, pubkey=pubkey, port=args.port))


def cmd_box_destroy(args, registry):
    boxes.destroy(registry, args.name)


def _box(registry, name: str) -> dict:
    """A box by its name, its instance's id, or its instance's Name tag."""
    record = instances.record_of(registry, name)
    if record is None:
        sys.exit(f"no box named {name} (nor one for an instance with that id or Name tag)")
    return record


def cmd_box_ssh(args, registry):
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    os.execvp("ssh", boxes.ssh_argv(_box(registry, args.name), *command))


def cmd_box_inventory(args, registry):
    _print(boxes.ansible_inventory(_box(registry, args.name), args.host or args.name))


def cmd_box_show(args, registry):
    _print(_box(registry, args.name))


def cmd_image(args, registry):
    print(images.ensure_dlami() if args.kind == "dlami" else rootfs.ensure_rootfs())


def cmd_ssh_proxy(args, registry):
    from . import sshproxy

    sshproxy.main(args.host)


def cmd_ansible_env(args, registry):
    """Exports that point Ansible at this local cloud (AWS emulator, boxes)."""
    record = registry.get("moto", moto.NAME)
    if record is None:
        sys.exit("the AWS emulator is not running: python -m localcloud moto-start")
    repo = Path(__file__).resolve().parent.parent
    # Host keys are checked as on AWS: the only difference is the route. The
    # inventory spotbox writes says which known_hosts file and accept-new.
    ssh_args = (
        "-o ControlMaster=auto -o ControlPersist=60s "
        f"-o ProxyCommand='{sys.executable} -m localcloud ssh-proxy %h %p'"
    )
    env = {**moto.aws_env(record), "ANSIBLE_SSH_ARGS": ssh_args,
           "PYTHONPATH": str(repo), "SPOTBOX_LOCALCLOUD_STATE": str(registry.root),
           # The box's facts (its IMDS stand-in: spotbox_imds_endpoint) for inventory hosts
           # that are this local cloud's instances: localcloud/ansible_vars/localcloud.py.
           "ANSIBLE_VARS_PLUGINS": str(repo / "localcloud" / "ansible_vars"),
           "ANSIBLE_VARS_ENABLED": "ansible.builtin.host_group_vars,localcloud"}
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


def _layer_client(registry, service):
    """A boto3 client through the running layer as the account root, None if it is not running."""
    record = registry.get("moto", moto.NAME)
    if record is None:
        return None
    import boto3

    env = moto.aws_env(record)
    return boto3.session.Session().client(
        service, region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def cmd_quota(args, registry):
    from .awslayer import switches

    with switches.edit(registry.root) as data:
        data["quotas"][args.code] = float(args.value)
    print(f"localcloud: quota {args.code} = {float(args.value):g}")


def cmd_capacity(args, registry):
    from .awslayer import switches

    pair = [args.type, args.zone]
    with switches.edit(registry.root) as data:
        data["capacity_off"] = [p for p in data["capacity_off"] if p != pair]
        if args.state == "off":
            data["capacity_off"].append(pair)
    print(f"localcloud: capacity of {args.type} in {args.zone}: {args.state}")


def cmd_account(args, registry):
    from .awslayer import switches

    with switches.edit(registry.root) as data:
        if args.spot_role is not None:
            data["spot_role"] = args.spot_role
        if args.default_vpc is not None:
            data["default_vpc"] = args.default_vpc
        shown = {k: data[k] for k in ("spot_role", "default_vpc")}
    ec2 = _layer_client(registry, "ec2")
    if ec2 is not None:
        ec2.describe_account_attributes()  # the layer applies the switches on its next call
    print(f"localcloud: account {json.dumps(shown)}")


def _instance_named(registry, name: str, states: list[str]) -> dict:
    """The emulated instance whose Name tag is name (the box standing in for it)."""
    ec2 = _layer_client(registry, "ec2")
    if ec2 is None:
        sys.exit("the AWS emulator is not running: python -m localcloud moto-start")
    found = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:Name", "Values": [name]},
        {"Name": "instance-state-name", "Values": states}])["Reservations"] for i in r["Instances"]]
    if len(found) != 1:
        sys.exit(f"{len(found)} instances named {name} in {states}; need exactly one")
    return found[0]


def cmd_interrupt(args, registry):
    """What EC2 does to a spot instance when it takes the capacity back: the notice, then,
    after --notice-seconds (AWS gives two minutes), stop or terminate."""
    from . import awslayer, imds

    instance = _instance_named(registry, args.name, ["pending", "running"])
    box = boxes.by_instance(registry, instance["InstanceId"])
    if box and registry.get(imds.KIND, box["name"]):  # its metadata stand-in shows the notice
        imds.publish_notice(imds.state_file(registry, box["name"]), args.action,
                            args.notice_seconds)
    # The notice's own time is whole seconds; the exact moment lets a test time the watcher.
    print(f"localcloud: {args.action} notice for {args.name} ({instance['InstanceId']}) "
          f"published at {time.time():.3f}; {args.action} in {args.notice_seconds:g} s",
          flush=True)
    time.sleep(args.notice_seconds)
    answer = awslayer.interrupt(registry.get("moto", moto.NAME), instance["InstanceId"],
                                args.action)
    print(f"localcloud: interrupted: {json.dumps(answer)}")


def cmd_restart(args, registry):
    """EC2 restarting a stopped spot instance when capacity returns."""
    instance = _instance_named(registry, args.name, ["stopped"])
    _layer_client(registry, "ec2").start_instances(InstanceIds=[instance["InstanceId"]])
    print(f"localcloud: restarted {args.name} ({instance['InstanceId']})")


def cmd_recycle_address(args, registry):
    from .awslayer import switches

    with switches.edit(registry.root) as data:
        data["next_public_ip"] = args.address
    print(f"localcloud: the next instance gets the public address {args.address}")


def cmd_rules(args, registry):
    from .awslayer import switches

    with switches.edit(registry.root) as data:
        data["strict"] = args.cmd == "strict"
    print(f"localcloud: AWS rules {'on' if args.cmd == 'strict' else 'off (plain moto)'}")


def cmd_iam_user(args, registry):
    """Create or update an IAM user with one inline policy and a fresh access key."""
    iam = _layer_client(registry, "iam")
    if iam is None:
        sys.exit("the AWS emulator is not running: python -m localcloud moto-start")
    policy = Path(args.policy).read_text(encoding="utf-8")
    json.loads(policy)  # a clear error for a file that is not JSON
    try:
        iam.create_user(UserName=args.name)
    except iam.exceptions.EntityAlreadyExistsException:
        for key in iam.list_access_keys(UserName=args.name)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=args.name, AccessKeyId=key["AccessKeyId"])
    iam.put_user_policy(UserName=args.name, PolicyName="localcloud", PolicyDocument=policy)
    key = iam.create_access_key(UserName=args.name)["AccessKey"]
    print(f"export AWS_ACCESS_KEY_ID={shlex.quote(key['AccessKeyId'])}")
    print(f"export AWS_SECRET_ACCESS_KEY={shlex.quote(key['SecretAccessKey'])}")


def cmd_imds(args, registry):
    from . import imds

    imds.main(args.args, registry)


def cmd_status(args, registry):
    _print(registry.snapshot())


def cmd_cleanup(args, registry):
    for line in cleanup.cleanup(registry, keep_volume_data=args.keep_volumes):
        print(f"localcloud: ended {line}")


def cmd_session(args, registry):
    """Run a command with its own state dir; end all it started afterwards."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        sys.exit("usage: python -m localcloud session -- COMMAND [ARG...]")
    state = Path(tempfile.mkdtemp(prefix="spotbox-localcloud-"))
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state)}
    session = Registry(state)
    # Boxes and servers outlive the short CLI calls that start them; as a
    # subreaper this process inherits and reaps them instead of leaving zombies.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        code = child.wait()
    finally:
        ended = cleanup.cleanup(session)
        if ended:
            print(f"localcloud: session cleanup ended {', '.join(ended)}", file=sys.stderr)
        subprocess.run(["rm", "-rf", "--one-file-system", str(state)], check=False)
        _reap_orphans()
    sys.exit(code)


def _reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m localcloud", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("rootfs", help="build (once) and print the cached root filesystem").set_defaults(
        func=cmd_rootfs)
    p = sub.add_parser("moto-start", help="start the AWS emulator")
    p.add_argument("--env", action="store_true", help="print shell exports for it")
    p.set_defaults(func=cmd_moto_start)
    sub.add_parser("moto-stop", help="stop the AWS emulator").set_defaults(func=cmd_moto_stop)
    p = sub.add_parser("volume-create", help="make a volume on a loop device")
    p.add_argument("name")
    p.add_argument("--size", default="1G")
    p.add_argument("--volume-id")
    p.set_defaults(func=cmd_volume_create)
    for verb, func, helptext in (
        ("volume-detach", cmd_volume_detach, "free the loop device, keep the data"),
        ("volume-destroy", cmd_volume_destroy, "free the loop device and delete the data"),
    ):
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("name")
        p.set_defaults(func=func)
    p = sub.add_parser("volume-grow", help="enlarge a volume")
    p.add_argument("name")
    p.add_argument("--size", required=True)
    p.set_defaults(func=cmd_volume_grow)
    p = sub.add_parser("box-create", help="boot a box")
    p.add_argument("name")
    p.add_argument("--attach", action="append", metavar="VOLUME[:DEVICE]")
    p.add_argument("--pubkey", help="an extra public key file to authorise")
    p.add_argument("--port", type=int, help="sshd port (default: a free one); a re-created "
                   "box keeps its address this way")
    p.set_defaults(func=cmd_box_create)
    p = sub.add_parser("box-destroy", help="power a box off and remove it")
    p.add_argument("name")
    p.set_defaults(func=cmd_box_destroy)
    p = sub.add_parser("ssh", help="ssh into a box (NAME: the box, its instance id or Name "
                       "tag); everything after NAME is the remote command")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_box_ssh)
    p = sub.add_parser("box-show", help="print a box's record (its instance id, IMDS endpoint, "
                       "boot time)")
    p.add_argument("name", help="the box, its instance id or its instance's Name tag")
    p.set_defaults(func=cmd_box_show)
    p = sub.add_parser("image", help="build (once) and print an image boxes boot from")
    p.add_argument("kind", choices=["debian", "dlami"], nargs="?", default="debian",
                   help="the plain root filesystem, or the Deep Learning AMI's stand-in")
    p.set_defaults(func=cmd_image)
    sub.add_parser("status", help="print the registry").set_defaults(func=cmd_status)
    p = sub.add_parser("box-inventory", help="print an Ansible inventory (JSON) reaching a box")
    p.add_argument("name")
    p.add_argument("--host", help="inventory host name (default: the box's name)")
    p.set_defaults(func=cmd_box_inventory)
    p = sub.add_parser("ssh-proxy", help="ProxyCommand: reach the box standing in for an instance")
    p.add_argument("host")
    p.add_argument("port")
    p.set_defaults(func=cmd_ssh_proxy)
    p = sub.add_parser("interrupt", help="EC2 takes a spot instance back: notice, then stop or "
                       "terminate it")
    p.add_argument("name", help="the instance's Name tag (spotbox-NAME)")
    p.add_argument("--action", choices=["terminate", "stop"], default="terminate")
    p.add_argument("--notice-seconds", type=float, default=120.0)
    p.set_defaults(func=cmd_interrupt)
    p = sub.add_parser("restart", help="EC2 restarts a stopped spot instance (capacity is back)")
    p.add_argument("name", help="the instance's Name tag (spotbox-NAME)")
    p.set_defaults(func=cmd_restart)
    p = sub.add_parser("recycle-address", help="the next instance launched gets this public "
                       "address (one an earlier instance had)")
    p.add_argument("address")
    p.set_defaults(func=cmd_recycle_address)
    sub.add_parser("ansible-env", help="print exports pointing Ansible at this local cloud"
                   ).set_defaults(func=cmd_ansible_env)
    p = sub.add_parser("quota", help="set a spot vCPU quota of the emulated account")
    p.add_argument("verb", choices=["set"])
    p.add_argument("code", help="quota code, e.g. L-3819A6DF (All G and VT Spot Instance Requests)")
    p.add_argument("value", type=float)
    p.set_defaults(func=cmd_quota)
    p = sub.add_parser("capacity", help="switch EC2 capacity of a type in a zone off or on")
    p.add_argument("state", choices=["off", "on"])
    p.add_argument("type")
    p.add_argument("zone")
    p.set_defaults(func=cmd_capacity)
    p = sub.add_parser("account", help="shape the emulated account (spot role, default VPC)")
    p.add_argument("--spot-role", dest="spot_role", action="store_true", default=None,
                   help="AWSServiceRoleForEC2Spot exists")
    p.add_argument("--no-spot-role", dest="spot_role", action="store_false",
                   help="AWSServiceRoleForEC2Spot does not exist (a new account)")
    p.add_argument("--default-vpc", dest="default_vpc", action="store_true", default=None,
                   help="the region has its default VPC back")
    p.add_argument("--no-default-vpc", dest="default_vpc", action="store_false",
                   help="delete the default VPC (subnets, gateway) in every region used")
    p.set_defaults(func=cmd_account)
    p = sub.add_parser("iam-user", help="create/update an IAM user with an inline policy; "
                       "print exports of a new access key for it")
    p.add_argument("name")
    p.add_argument("--policy", required=True, help="policy document (JSON file)")
    p.set_defaults(func=cmd_iam_user)
    sub.add_parser("strict", help="the AWS layer applies AWS's rules (the default)"
                   ).set_defaults(func=cmd_rules)
    sub.add_parser("lenient", help="the AWS layer passes everything to moto (plain moto)"
                   ).set_defaults(func=cmd_rules)
    p = sub.add_parser("imds", add_help=False, help="a box's IMDSv2 stand-in on 127.0.0.1: "
                       "start NAME, notice NAME --action ACTION, rebalance, clear, stop ...")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_imds)
    p = sub.add_parser("cleanup", help="end everything this state dir started")
    p.add_argument("--keep-volumes", action="store_true")
    p.set_defaults(func=cmd_cleanup)
    p = sub.add_parser("session", help="run COMMAND with a private state dir, clean up after")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_session)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    registry = None if args.cmd == "session" else Registry()
    args.func(args, registry)


if __name__ == "__main__":
    main()
