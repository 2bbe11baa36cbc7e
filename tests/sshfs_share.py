"""A real network share for tests: an sshd of the test's own on 127.0.0.1, mounted with sshfs.

Files written into the server's folder (as another client of the share would write them)
raise no inotify event on the mount, which is a FUSE mount (`fuse.sshfs`). The mount caches
no folder listing (`dir_cache=no`); the kernel still caches attributes for 1 s.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server_process import ServerProcess, free_port

SSHD = "/usr/sbin/sshd"  # sshd runs only from its absolute path
PRIVILEGE_SEPARATION = Path("/run/sshd")
MOUNT_SECONDS = 30.0


def share_problem() -> str | None:
    """Why a share cannot be made here, or None."""
    if os.geteuid() != 0:
        return "mounting a FUSE share for tests needs root"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    missing = [tool for tool in (SSHD, "sshfs", "ssh-keygen") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed: run `make setup` (openssh-server, sshfs)"
    return None


class SshServer(ServerProcess):
    """sshd on a free port of 127.0.0.1 that lets in root with a key made for it."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.key = directory / "client_key"
        host_key = directory / "host_key"
        for key in (self.key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        authorized = directory / "authorized_keys"
        shutil.copy(self.key.with_suffix(".pub"), authorized)
        config = directory / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\nPidFile {directory / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\n"
        )
        PRIVILEGE_SEPARATION.mkdir(mode=0o755, exist_ok=True)
        super().__init__([SSHD, "-D", "-e", "-f", str(config)], directory / "sshd.log",
                         self.answers)

    def answers(self) -> bool:
        """True when the server sends its SSH banner."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    @contextmanager
    def mounted(self, remote: Path, mountpoint: Path) -> Iterator[Path]:
        """`remote` mounted at `mountpoint` with sshfs inside the block."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        options = (f"IdentityFile={self.key},StrictHostKeyChecking=no,"
                   "UserKnownHostsFile=/dev/null,dir_cache=no")
        subprocess.run(["sshfs", "-p", str(self.port), "-o", options,
                        f"root@127.0.0.1:{remote}", str(mountpoint)],
                       check=True, timeout=MOUNT_SECONDS)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=True, timeout=MOUNT_SECONDS)


@contextmanager
def share(directory: Path) -> Iterator[tuple[Path, Path]]:
    """A server folder and the sshfs mount of it, both under `directory`."""
    server = SshServer(directory)
    server.start()
    try:
        remote = directory / "server"
        remote.mkdir()
        with server.mounted(remote, directory / "mount") as mountpoint:
            yield remote, mountpoint
    finally:
        server.stop()
