"""Build the Debian root filesystem boxes are copied from, once, cached by recipe."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("SPOTBOX_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What an EC2 Deep Learning AMI offers that the roles rely on: systemd, sshd,
# sudo, python3 for Ansible, parted/growpart for volumes, CA certificates.
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "sudo",
    "openssh-server", "ca-certificates", "parted", "cloud-guest-utils",
    "e2fsprogs", "iproute2", "procps", "curl",
]
LOGIN_USER = "ubuntu"
CA_DIR = Path("/usr/local/share/ca-certificates")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = Path(os.environ.get("SPOTBOX_CACHE", base / "spotbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def host_ca_files() -> list[Path]:
    """The host's extra CA certificates (an inspecting proxy's, say)."""
    return sorted(CA_DIR.glob("*.crt")) if CA_DIR.is_dir() else []


def recipe() -> dict:
    """Everything that decides the content of the root filesystem."""
    return {
        "version": 3,
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": PACKAGES,
        "login_user": LOGIN_USER,
        "ca": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in host_ca_files()},
    }


def recipe_key(spec: dict | None = None) -> str:
    blob = json.dumps(spec or recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def ensure_rootfs(log=print) -> Path:
    """Return the cached root filesystem for the current recipe, building it if absent."""
    spec = recipe()
    target = cache_dir() / f"rootfs-{SUITE}-{recipe_key(spec)}"
    if (target / ".spotbox-recipe.json").exists():
        return target
    started = time.monotonic()
    log(f"localcloud: building Debian {SUITE} root filesystem into {target} (once)")
    work = Path(tempfile.mkdtemp(prefix="rootfs-build-", dir=cache_dir()))
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(work), MIRROR],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        work.chmod(0o755)  # mkdtemp made it 0700: the box's / must be traversable
        _configure(work)
        (work / ".spotbox-recipe.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
        work.rename(target)
        for stale in cache_dir().glob(f"rootfs-{SUITE}-*"):
            if stale != target:  # an older recipe's tree: no box is copied from it any more
                shutil.rmtree(stale, ignore_errors=True)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"debootstrap failed:\n{exc.stderr[-3000:]}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log(f"localcloud: root filesystem built in {time.monotonic() - started:.1f}s")
    return target


def _chroot(root: Path, *argv: str) -> None:
    result = subprocess.run(
        ["chroot", str(root), *argv], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"chroot {' '.join(argv)} failed: {result.stderr}")


def _configure(root: Path) -> None:
    """Make the tree look like an EC2 AMI: user ubuntu, sudo, sshd, CA files."""
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", LOGIN_USER)
    sudoers = root / "etc/sudoers.d" / LOGIN_USER
    sudoers.write_text(f"{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n", encoding="utf-8")
    sudoers.chmod(0o440)
    (root / "etc/ssh/sshd_config.d/10-spotbox.conf").write_text(
        "PasswordAuthentication no\nPermitRootLogin no\nKbdInteractiveAuthentication no\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n",
        encoding="utf-8",
    )
    for ca in host_ca_files():
        shutil.copy2(ca, root / "usr/local/share/ca-certificates" / ca.name)
    _chroot(root, "update-ca-certificates")
    # pip inside the box must trust the same CAs as the host (proxy or not).
    (root / "etc/pip.conf").write_text(
        "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n", encoding="utf-8"
    )
    # An empty machine-id makes systemd generate one per box at boot.
    (root / "etc/machine-id").write_text("", encoding="utf-8")
    # Host keys are made per box at its first boot (ssh-keygen -A in a unit).
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    unit = root / "etc/systemd/system/spotbox-hostkeys.service"
    unit.write_text(
        "[Unit]\nDescription=Generate SSH host keys\nBefore=ssh.service\n"
        "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n"
        "[Service]\nType=oneshot\n"
        'ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key\n\n'
        "[Install]\nWantedBy=multi-user.target\n",
        encoding="utf-8",
    )
    _chroot(root, "systemctl", "enable", "spotbox-hostkeys.service")
    (root / "etc/apt/apt.conf.d/99spotbox-no-recommends").write_text(
        'APT::Install-Recommends "false";\n', encoding="utf-8"
    )
