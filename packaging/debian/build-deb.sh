#!/bin/bash
# Turns the tree `make install DESTDIR=ROOT` staged into a Debian package (`make deb`).
# usage: build-deb.sh ROOT DEB_FILE, with PREFIX, DOCDIR, VERSION, ARCH, MAINTAINER and
# COMPRESS in the environment (the Makefile's values).
set -euo pipefail
root=$(realpath "$1") out=$2 here=$(dirname "$0")
venv=$root$PREFIX

# No pip in the package (an upgrade is a new package); nothing names the staging folder:
# the byte code is compiled again with the installed paths.
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools
sed -i "s|$venv|$PREFIX|g" "$venv/pyvenv.cfg"
find "$venv" -name __pycache__ -prune -exec rm -rf {} +
"$venv/bin/python" -m compileall -q -j 0 -s "$root" -p / "$venv/lib" >/dev/null
install -m 644 "$here/copyright" "$root$DOCDIR/copyright"

# the venv's links name Debian's python3.X; compiled wheels name the glibc they need
python=$("$venv/bin/python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
depends="$python, adduser"
glibc=$(cat "$venv"/lib/*/site-packages/*.dist-info/WHEEL | grep -oE 'manylinux_2_[0-9]+' |
	cut -d_ -f3 | sort -n | tail -1 || true)
if [ -n "$glibc" ]; then depends="$depends, libc6 (>= 2.$glibc)"; fi

install -d -m 755 "$root/DEBIAN"
install -m 755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@MAINTAINER@|$MAINTAINER|" \
	-e "s|@SIZE@|$(du -sk --exclude=DEBIAN "$root" | cut -f1)|" -e "s|@DEPENDS@|$depends|" \
	"$here/control.in" >"$root/DEBIAN/control"
# every file in /etc is a conffile (the example: an operator who edits it in place is
# asked on upgrade; one who copies it to node.toml, as documented, is not)
(cd "$root" && find etc -type f -printf '/%p\n') >"$root/DEBIAN/conffiles"
dpkg-deb --build --root-owner-group -Z"$COMPRESS" "$root" "$out"
