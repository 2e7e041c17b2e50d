"""EC2 instances as boxes: the AWS layer makes every instance moto has a real box.

The layer (localcloud/awslayer) sees every EC2 call and moto's answer. It hands
them to ``Instances.after_call``, which keeps the boxes, loop volumes and IMDS
stand-ins in step with what EC2 would have done:

* RunInstances: a box per instance, booted from the AMI's stand-in image
  (images.py), keyed by instance id and named NAME-TAG-INSTANCE-ID; its IMDS
  stand-in starts with the instance id and life cycle. The box boots in the
  background, as the instance goes from pending to running; ssh-proxy waits for it.
* StopInstances / StartInstances: the box powers off (its root kept) / boots again.
* TerminateInstances: the box and its root go; its volumes are detached and kept.
* CreateVolume / DeleteVolume: a sparse file on a loop device, named by moto's
  volume id / destroyed. AttachVolume / DetachVolume: hot, in the running box.

What EC2 does by itself (the layer's interruptions, a persistent request's new
instance, a cancelled request's stopped instance) reaches moto without a call
through the layer: a watcher thread compares moto's instances with the boxes
every second and acts on the difference. It also sees a box that powered itself
off (``systemctl poweroff`` inside: its nspawn exits with no API call) and
applies the instance's InstanceInitiatedShutdownBehavior as EC2 does: "By
default, when you initiate a shutdown from an Amazon EBS backed instance (using
a command such as shutdown or poweroff), the instance stops. You can change this
behavior so that the instance terminates instead by changing the
InstanceInitiatedShutdownBehavior attribute" (EC2 User Guide, "Change instance
initiated shutdown behavior"). The stop or terminate goes through the layer, so
a spot request moves as for any other stop or terminate.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from . import boxes, images, imds, procs, volumes
from .registry import Registry

log = logging.getLogger("localcloud.instances")
ACTIONS = {"RunInstances", "StartInstances", "StopInstances", "TerminateInstances",
           "CreateVolume", "DeleteVolume", "AttachVolume", "DetachVolume",
           "CancelSpotInstanceRequests", "ModifyInstanceAttribute"}
RUNNING = ("pending", "running")
STOPPED = ("stopping", "stopped")
GONE = ("shutting-down", "terminated")
BOOT_TIMEOUT = 180.0
# Seconds after the last EC2 call through the layer during which the watcher looks
# even without a box (a persistent request's new instance comes after a terminate).
QUIET_AFTER = 60.0


def box_name(instance_id: str, tags: dict[str, str]) -> str:
    """NAME-TAG-i-… (recognisable in `machinectl`-like listings), or the id alone."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", tags.get("Name", ""))[:40].strip("-")
    return f"{name}-{instance_id}" if name else instance_id


class Instances:
    """The boxes of one local cloud, kept in step with moto's EC2 (see the module doc).

    client(region) gives a boto3 EC2 client on moto itself (for looking);
    through_layer(region) one through the layer (for acting as EC2 does, with its rules);
    lifecycle(instance_id) says "spot" or "on-demand".
    """

    ACTIONS = ACTIONS

    def __init__(self, registry: Registry, client: Callable[[str], Any],
                 through_layer: Callable[[str], Any],
                 lifecycle: Callable[[str], str] = lambda _id: "on-demand",
                 interval: float = 1.0, wait_ready: bool = True) -> None:
        self.registry = registry
        self.client = client
        self.through_layer = through_layer
        self.lifecycle = lifecycle
        self.interval = interval
        self.wait_ready = wait_ready
        self.regions: set[str] = {"us-east-2"}
        self.busy: set[str] = set()  # instance ids a worker is booting/stopping
        self.lock = threading.RLock()
        self.kick = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.launches_in_flight = 0

    # ------------------------------------------------------------ the watcher

    def start(self) -> None:
        self.thread = threading.Thread(target=self._watch, name="instances", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.kick.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def _watch(self) -> None:
        last_kick = -QUIET_AFTER
        while not self.stopping.is_set():
            if self.kick.wait(self.interval):
                last_kick = time.monotonic()
            self.kick.clear()
            # An account with no box and no EC2 call for a while has nothing to follow:
            # moto is left alone (its first call in a region takes seconds).
            if (time.monotonic() - last_kick > QUIET_AFTER
                    and not any(b.get("instance_id") for b in
                                self.registry.snapshot().get("box", {}).values())):
                continue
            try:
                self.reconcile()
            except Exception:  # the watcher must outlive one bad pass
                traceback.print_exc()

    # ------------------------------------------------------- calls as they pass

    @contextlib.contextmanager
    def call_in_flight(self, action: str) -> Iterator[None]:
        """Around an EC2 call through the layer. While a RunInstances is between moto and
        after_call, the watcher leaves new instances to it (the layer's after-hooks have
        not yet said whether they are spot)."""
        if action != "RunInstances":
            yield
            return
        with self.lock:
            self.launches_in_flight += 1
        try:
            yield
        finally:
            with self.lock:
                self.launches_in_flight -= 1

    def after_call(self, action: str, region: str, params: dict[str, Any], status: int,
                   answer: dict[str, Any]) -> None:
        """Act on an EC2 call moto answered (status < 300) through the layer."""
        if action not in ACTIONS or status >= 300:
            return
        self.regions.add(region)
        if action == "CreateVolume":
            volumes.create(self.registry, answer["VolumeId"], f"{answer['Size']}G",
                           answer["VolumeId"])
            self.registry.update("volume", answer["VolumeId"], region=region)
        elif action == "DeleteVolume":
            volumes.destroy(self.registry, params["VolumeId"])
        elif action == "AttachVolume":
            self.attach(params["VolumeId"], params["InstanceId"], params["Device"])
        elif action == "DetachVolume":
            self.detach(params["VolumeId"])
        elif action == "RunInstances":
            for instance in answer.get("Instances", []):
                self.launch(instance, region)
        self.kick.set()  # the rest (stop, start, terminate) in the watcher, now

    def attach(self, volume_id: str, instance_id: str, device: str) -> None:
        volume = self.registry.get("volume", volume_id)
        box = boxes.by_instance(self.registry, instance_id)
        if volume and volume.get("loop") and box:
            boxes.attach(self.registry, box["name"], volume, device)

    def detach(self, volume_id: str) -> None:
        for box in self.registry.snapshot().get("box", {}).values():
            if volume_id in boxes.attached_volumes(box):
                boxes.detach(self.registry, box["name"], volume_id)

    # ------------------------------------------------------------ the boxes

    def launch(self, instance: dict[str, Any], region: str) -> None:
        """Record the instance's box and boot it in the background."""
        instance_id = instance["InstanceId"]
        with self.lock:
            if boxes.by_instance(self.registry, instance_id) or instance_id in self.busy:
                return
            self.busy.add(instance_id)
        threading.Thread(target=self._launch, args=(instance, region), daemon=True,
                         name=f"launch-{instance_id}").start()

    def _launch(self, instance: dict[str, Any], region: str) -> None:
        instance_id = instance["InstanceId"]
        started = time.monotonic()
        try:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            name = box_name(instance_id, tags)
            life = self.lifecycle(instance_id)
            image = images.for_ami(instance.get("ImageId"), log=log.info)
            imds_port = procs.free_port()  # recorded with the box, before anything asks
            boxes.prepare(self.registry, name, image, overlay=True,
                          hostname=tags.get("Name") or instance_id, instance_id=instance_id,
                          region=region, image_id=instance.get("ImageId"), life_cycle=life,
                          imds_endpoint=f"http://127.0.0.1:{imds_port}",
                          launched_at=time.time())
            prepared = time.monotonic()
            # The box boots while its metadata stand-in starts.
            record = boxes.power_on(self.registry, name, wait=False)
            imds.start(self.registry, name, life_cycle=life, instance_id=instance_id,
                       port=imds_port)
            if self.wait_ready:
                boxes.wait_ready(record, BOOT_TIMEOUT)
            self.registry.update("box", name, state="running",
                                 boot_seconds=round(time.monotonic() - started, 2))
            log.info("%s: box %s up in %.1f s (root %.1f s)", instance_id, name,
                     time.monotonic() - started, prepared - started)
        except Exception:
            traceback.print_exc()
        finally:
            with self.lock:
                self.busy.discard(instance_id)
            self.kick.set()

    def _boot(self, name: str, started: float | None = None) -> None:
        boxes.power_on(self.registry, name, timeout=BOOT_TIMEOUT, wait=self.wait_ready,
                       started=started)
        if not self.wait_ready:
            self.registry.update("box", name, state="running")

    def _in_background(self, instance_id: str, work: Callable[[], None]) -> None:
        with self.lock:
            if instance_id in self.busy:
                return
            self.busy.add(instance_id)

        def run() -> None:
            try:
                work()
            except Exception:
                traceback.print_exc()
            finally:
                with self.lock:
                    self.busy.discard(instance_id)

        threading.Thread(target=run, daemon=True, name=f"box-{instance_id}").start()

    def _power_off(self, name: str) -> None:
        self.registry.update("box", name, state="stopping")
        boxes.power_off(self.registry, name)

    def _power_on(self, name: str) -> None:
        record = self.registry.get("box", name)
        if record and record.get("imds_endpoint"):
            # A started instance has no notice left from before it stopped.
            imds.write_state(imds.state_file(self.registry, name), instance_action=None,
                             rebalance=None)
        self._boot(name)

    def _terminate(self, name: str) -> None:
        imds.stop(self.registry, name)
        boxes.destroy(self.registry, name)

    # ------------------------------------------------------------ reconcile

    def instances(self) -> dict[str, dict[str, Any]]:
        found = {}
        for region in sorted(self.regions):
            pages = self.client(region).get_paginator("describe_instances").paginate()
            for page in pages:
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        found[instance["InstanceId"]] = {**instance, "_region": region}
        return found

    def reconcile(self) -> None:
        """Make the boxes follow moto's instance states (and notice boxes that powered off)."""
        found = self.instances()
        snapshot = self.registry.snapshot().get("box", {})
        ours = {r["instance_id"]: r for r in snapshot.values() if r.get("instance_id")}
        for instance_id, instance in found.items():
            state = instance["State"]["Name"]
            box = ours.get(instance_id)
            with self.lock:
                if instance_id in self.busy:
                    continue
            if box is None:
                # Launched without a call through the layer (a persistent request's new
                # instance); one of a RunInstances still in the layer is left to it.
                if state in RUNNING and not self.launches_in_flight:
                    self.launch(instance, instance["_region"])
                continue
            name = box["name"]
            alive = boxes.running(box)
            if state in RUNNING and not alive:
                if box.get("state") in ("running", "booting"):
                    self.powered_off_inside(instance, name)
                else:
                    self._in_background(instance_id, lambda n=name: self._power_on(n))
            elif state in STOPPED and (alive or box.get("state") != "stopped"):
                self._in_background(instance_id, lambda n=name: self._power_off(n))
            elif state in GONE:
                self._in_background(instance_id, lambda n=name: self._terminate(n))
        for instance_id, box in ours.items():
            if instance_id not in found:  # moto was reset: the instance is no more
                self._in_background(instance_id, lambda n=box["name"]: self._terminate(n))

    def powered_off_inside(self, instance: dict[str, Any], name: str) -> None:
        """The box's nspawn exited without an API call: the OS shut itself down."""
        instance_id, region = instance["InstanceId"], instance["_region"]
        box = self.registry.get("box", name) or {}
        if box.get("pid"):
            procs.reap(box["pid"])  # the layer started it: its exit status is ours to collect
        self.registry.update("box", name, state="stopped", pid=None, pid_start=None)
        behaviour = self.client(region).describe_instance_attribute(
            InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior",
        )["InstanceInitiatedShutdownBehavior"]["Value"]
        ec2 = self.through_layer(region)
        log.info("%s powered itself off: %s (InstanceInitiatedShutdownBehavior)",
                 instance_id, behaviour)
        if behaviour == "terminate":
            ec2.terminate_instances(InstanceIds=[instance_id])
            return
        try:
            ec2.stop_instances(InstanceIds=[instance_id])
        except Exception as error:  # a one-time spot instance cannot stop
            # EC2 refuses StopInstances for a one-time spot instance; the layer does too.
            # What EC2 then does is not documented; an instance that cannot stop is
            # terminated here (an inference).
            log.warning("%s cannot stop (%s): terminated", instance_id, error)
            ec2.terminate_instances(InstanceIds=[instance_id])


def record_of(registry: Registry, key: str) -> dict | None:
    """A box by its name, its instance id, or its instance's Name tag (when one box has it)."""
    snapshot = registry.snapshot().get("box", {})
    if key in snapshot:
        return snapshot[key]
    found = [r for r in snapshot.values() if r.get("instance_id") == key]
    if not found:
        found = [r for r in snapshot.values()
                 if r.get("instance_id") and r["name"] == f"{key}-{r['instance_id']}"]
    return found[0] if len(found) == 1 else None


__all__ = ["Instances", "box_name", "record_of"]
