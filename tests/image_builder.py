"""A container image built here, with no registry: a busybox-static root file system (plus an
``/etc/os-release`` of its own) imported with ``podman import``. Used by the image tests and
bench/images_bench.py. Podman runs with gpupool's own ``containers.conf`` (runc)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from gpupool.executors.containers import conf_text, podman_env

IMAGE = "localhost/gpupool-test:1"
OS_RELEASE = 'NAME="gpupool test image"\nID=gpupool-test\n'
APPLETS = ("sh", "cat", "id", "ls", "echo", "env", "sleep", "stat", "pwd", "test", "touch")


def missing() -> str | None:
    """Why images cannot be built or run here, or None."""
    for program in ("podman", "runc"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install podman runc busybox-static)"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static is not installed (apt-get install busybox-static)"
    if os.geteuid() != 0:
        return "images need rootful podman: run the tests as root"
    return None


def build(conf_dir: Path) -> str:
    """Build (or rebuild) :data:`IMAGE`; returns its name."""
    conf = conf_dir / "containers.conf"
    conf.write_text(conf_text())
    env = podman_env(str(conf))
    with tempfile.TemporaryDirectory(prefix="gpimg-") as tmp:
        root = Path(tmp) / "rootfs"
        for sub in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            (root / sub).mkdir(parents=True)
        os.chmod(root / "tmp", 0o1777)
        shutil.copy2("/bin/busybox", root / "bin" / "busybox")
        for applet in APPLETS:
            os.symlink("busybox", root / "bin" / applet)
        (root / "etc" / "os-release").write_text(OS_RELEASE)
        tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True,
                             check=True).stdout
        subprocess.run(["podman", "import", "--quiet", "-", IMAGE], input=tar, env=env,
                       capture_output=True, check=True, timeout=120)
    return IMAGE


def containers(conf_dir: Path) -> list[str]:
    """Names of the containers podman has (running or not)."""
    env = podman_env(str(conf_dir / "containers.conf"))
    out = subprocess.run(["podman", "ps", "--all", "--format", "{{.Names}}"], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return out.split()
