"""spotbox's local cloud: a real stand-in for the parts of AWS the tests need.

* an AWS API emulator (moto server on 127.0.0.1),
* boxes: Debian 12 root filesystems booted with systemd-nspawn (real systemd,
  sshd, sudo), reached over SSH like an EC2 Deep Learning AMI (user ``ubuntu``),
* volumes: sparse files on loop devices handed to boxes as EBS volumes.

Everything it starts is written to a registry in its state directory and
ended by id (pid, loop device, path), never by name.
"""
