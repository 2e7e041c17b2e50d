#!/bin/bash
# Print the state of a box that spotbox's roles could change, one line per
# thing, in a stable order: two runs print the same lines unless something
# changed. Run as root on the box (bash -s < box_state.sh); compared before and
# after a check-mode run, which must change none of it.
#   mount   every mount (but the login sessions' /run/user)
#   fstab   /etc/fstab's sha256
#   unit    every unit file and its enablement; every loaded unit's state
#   file    every file, folder and link under the roles' paths: type, mode,
#           owner, size, link target, mtime
#   disk    each attached volume: its partitions, what blkid finds, the sha256
#           of its first and last MiB (partition tables, filesystem signatures)
set -euo pipefail
export LC_ALL=C

findmnt -rn -o TARGET,SOURCE,FSTYPE,OPTIONS | grep -v '^/run/user/' | sed 's/^/mount /' | sort

echo "fstab $(sha256sum < /etc/fstab | cut -d' ' -f1)"

systemctl list-unit-files --no-legend --no-pager --plain | awk '{print "unit-file", $1, $2}' | sort
# Loaded units only ("not-found" ones come and go as they are asked about), not
# the login sessions' (each ssh login has its scope and user manager).
systemctl list-units --all --no-legend --no-pager --plain \
  | awk '$2 == "loaded" && $1 !~ /^(session-.*\.scope|user@.*|user-runtime-dir@.*|user-.*\.slice)$/ {
           print "unit", $1, $3, $4 }' | sort

# The roles' paths: /etc (fstab, profile.d, ld.so.conf.d, systemd units),
# /usr/local (the cuda link), /opt (environments, Miniforge), /home (the mount
# point, ~/.jupyter, ~/.bashrc), /run/lock (the volume lock), /tmp (the
# Miniforge installer). Folders with their mtime (an entry made or removed
# changes it), but /tmp's (ssh and sudo come and go there). Not what is inside
# an environment's site-packages or a cache (tens of thousands of files: their
# folder's mtime tells an install), nor Ansible's own working folders
# (~/.ansible, and in /tmp the payload of the very task that runs this).
find /etc /usr/local /opt /home /root /run/lock /tmp -xdev \
  \( -path '*/.ansible' -o -path '/tmp/ansible_*' -o -path '*/site-packages/*' -o -path '*/.cache/*' \) -prune -o \
  \( -path /tmp -printf 'file %p d %m %u:%g\n' \) -o \
  -printf 'file %p %y %m %u:%g %s %l %T@\n' | sort

# Attached volumes (EC2 names, as the local cloud gives them).
for name in /dev/xvd? /dev/nvme?n?; do
  [ -b "$name" ] || continue
  dev=$(readlink -f "$name")
  size=$(blockdev --getsize64 "$dev")
  head=$(head -c 1048576 "$dev" | sha256sum | cut -d' ' -f1)
  tail=$(tail -c 1048576 "$dev" | sha256sum | cut -d' ' -f1)
  parts=$(ls "/sys/class/block/${dev##*/}" | grep "^${dev##*/}p\?[0-9]" | tr '\n' ',' || true)
  # No trailing space: the state read back with the file lookup loses it (rstrip).
  found=$(blkid -p -o export "$dev" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//' || true)
  echo "disk $name $dev size=$size head=$head tail=$tail partitions=$parts blkid=$found"
done
