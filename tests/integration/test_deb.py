"""``make deb``: the package's fields and files; then installed, run, removed and purged.

The package is the real one (``make deb``: the staged ``make install``, Debian's Python,
dpkg-deb). The host's own dpkg installs it, maintainer scripts and all, into a throwaway
root: a copy-on-write view of this host (an overlay over ``/`` whose upper layer is a
tmpfs, in a private mount namespace, chrooted into). The host's files, users and dpkg
database are untouched; the view sees what the package adds and what it leaves behind.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.wait import wait_until

pytestmark = pytest.mark.root

REPO = Path(__file__).parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CONFFILE = "/etc/vipcast/node.toml.example"
CONFIG = "/etc/vipcast/node.toml"
SHIPPED = (
    "/usr/bin/vipcast",
    "/opt/vipcast/bin/vipcast",
    "/lib/systemd/system/vipcast.service",
    CONFFILE,
    "/usr/share/doc/vipcast/README.md",
    "/usr/share/doc/vipcast/copyright",
    "/usr/share/doc/vipcast/vipcast-rules.yml",
    "/usr/share/doc/vipcast/vipcast.json",
    "/usr/share/doc/vipcast/vipcast.lua",
)
CHROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # and nothing else of this environment


def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )


def ok(*argv: str) -> str:
    done = run(*argv)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deb")


@pytest.fixture(scope="module")
def deb(staging: Path) -> Path:
    # zstd: the default xz costs ~10 s of compression here, and dpkg reads both
    ok("make", "-C", str(REPO), "deb", f"DEB_DIR={staging}", "DEB_COMPRESS=zstd")
    arch = ok("dpkg", "--print-architecture").strip()
    return staging / f"vipcast_{VERSION}_{arch}.deb"


class ThrowawayRoot:
    """This host seen through an overlay in a private mount namespace; writes go to tmpfs."""

    def __init__(self, base: Path) -> None:
        self.merged = base / "merged"
        # the namespace lives as long as this process; nothing else runs in it
        unshare = ["unshare", "--mount", "--propagation", "private", "sleep", "600"]
        self.holder = subprocess.Popen(unshare)
        own = os.readlink("/proc/self/ns/mnt")
        try:  # never mount before the holder is in its own namespace
            wait_until(lambda: self._namespace() not in {None, own}, 10, what="unshare")
            self._mount(base)
        except BaseException:
            self.close()
            raise

    def _namespace(self) -> str | None:
        try:
            return os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        except OSError:
            return None

    def _mount(self, base: Path) -> None:
        upper, work, merged = base / "upper", base / "work", self.merged
        script = (
            f"mount -t tmpfs vipcast-deb-test {base} && mkdir {upper} {work} {merged} && "
            f"mount -t overlay overlay -o lowerdir=/,upperdir={upper},workdir={work} {merged}"
            f" && mount --rbind /dev {merged}/dev && mount -t proc proc {merged}/proc"
        )
        ok("nsenter", "-t", str(self.holder.pid), "-m", "sh", "-c", script)

    def run(self, command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``command`` by sh, as root inside the view (its /, its dpkg, its users)."""
        chroot = ["nsenter", "-t", str(self.holder.pid), "-m", "chroot", str(self.merged)]
        return run(*chroot, "env", "-i", f"PATH={CHROOT_PATH}", "sh", "-c", command, stdin=stdin)

    def ok(self, command: str) -> str:
        done = self.run(command)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done.stdout

    def exists(self, path: str) -> bool:
        return bool(self.existing([path]))

    def existing(self, paths: list[str]) -> set[str]:
        """Those of ``paths`` present in the view (links too, dangling or not)."""
        test = 'while read -r p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
        done = self.run(test, stdin="".join(f"{p}\n" for p in paths))
        assert done.returncode == 0, done.stderr
        return set(done.stdout.splitlines())

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(timeout=10)


@pytest.fixture
def view(tmp_path: Path) -> Iterator[ThrowawayRoot]:
    root = ThrowawayRoot(tmp_path)
    try:
        yield root
    finally:
        root.close()


def field(deb: Path, name: str) -> str:
    return ok("dpkg-deb", "--field", str(deb), name).strip()


def contents(deb: Path) -> list[str]:
    """The package's paths, absolute, as dpkg lists them (links without their target)."""
    lines = ok("dpkg-deb", "--contents", str(deb)).splitlines()
    names = [line.split(maxsplit=5)[5].split(" -> ")[0] for line in lines]
    return [name.removeprefix(".").rstrip("/") or "/" for name in names]


def test_the_package_has_its_fields_and_files(deb: Path, staging: Path) -> None:
    assert field(deb, "Package") == "vipcast"
    assert field(deb, "Version") == VERSION
    assert field(deb, "Architecture") == ok("dpkg", "--print-architecture").strip()
    python = Path(ok("readlink", "-f", "/usr/bin/python3").strip()).name  # what the venv uses
    depends = [d.strip().split()[0] for d in field(deb, "Depends").split(",")]
    assert {python, "adduser", "libc6"} <= set(depends), depends
    paths = contents(deb)
    assert set(SHIPPED) <= set(paths), sorted(set(SHIPPED) - set(paths))
    assert not [p for p in paths if p.startswith("/usr/local/")]  # Debian policy 9.1.2
    assert not [p for p in paths if "/site-packages/pip/" in p]  # upgrades are packages
    assert ok("dpkg-deb", "--info", str(deb), "conffiles").split() == [CONFFILE]
    for script in ("postinst", "prerm", "postrm"):
        ok("dpkg-deb", "--info", str(deb), script)
    # nothing in it names the folder it was staged in (scripts, pyvenv.cfg, byte code)
    unpacked = staging / "unpacked"
    ok("dpkg-deb", "--extract", str(deb), str(unpacked))
    staged = run("grep", "-rlF", str(staging / "deb-root"), str(unpacked))
    assert staged.returncode == 1, staged.stdout[:2000]


def test_installed_it_runs_and_removed_it_leaves_only_its_conffile(
    deb: Path, view: ThrowawayRoot
) -> None:
    # whatever a `make install` left on this host, gone in the view only
    view.ok("rm -rf /opt/vipcast /etc/vipcast /usr/share/doc/vipcast")
    view.ok("if getent passwd vipcast >/dev/null; then userdel vipcast; fi")
    view.ok(f"dpkg -i {deb}")
    assert view.ok("dpkg-query -W -f '${Status}' vipcast") == "install ok installed"
    assert view.ok("vipcast --version").strip() == f"vipcast {VERSION}"
    # the documented first steps: a config from the example, the node's keys
    view.ok(f"install -m 640 -g vipcast {CONFFILE} {CONFIG}")
    view.ok("vipcast keygen /etc/vipcast/vrrp.key && vipcast keygen /etc/vipcast/cluster.key")
    view.ok(f"vipcast check-config --offline {CONFIG}")
    user = view.ok("getent passwd vipcast").strip().split(":")
    assert int(user[2]) < 1000, user  # a system user
    assert user[5] == "/nonexistent", user
    verified = view.run("systemd-analyze verify /lib/systemd/system/vipcast.service")
    assert verified.returncode == 0, verified.stderr
    assert not verified.stderr.strip(), verified.stderr

    view.ok("dpkg -r vipcast")
    assert view.ok("dpkg-query -W -f '${Status}' vipcast") == "deinstall ok config-files"
    left = view.existing(contents(deb))
    shared = {"/", "/etc", "/lib", "/lib/systemd", "/lib/systemd/system", "/opt", "/usr"}
    shared |= {"/usr/bin", "/usr/share", "/usr/share/doc"}  # the host's, before and after
    assert left - shared == {"/etc/vipcast", CONFFILE}, sorted(left - shared)[:20]

    view.ok("dpkg --purge vipcast")
    assert not view.exists(CONFFILE)
    for operators in (CONFIG, "/etc/vipcast/vrrp.key", "/etc/vipcast/cluster.key"):
        assert view.exists(operators), operators  # purge keeps what the operator wrote
    assert view.run("dpkg-query -W vipcast").returncode != 0  # dpkg forgot it
    view.ok("getent passwd vipcast")  # Debian keeps system users: files may still be theirs
