#!/usr/bin/env bash
# Build the local stand-in for the public Python base image (python:3.11-slim-bookworm)
# from Debian packages, for machines that reach Debian's archive but no container
# registry. Writes a root filesystem tarball to $1.
#
# The root: debootstrap --variant=minbase of bookworm with Debian's Python 3.11,
# and a virtualenv at /opt/venv, so `pip install` in the Dockerfiles works as it
# does on the python image (images/build.sh sets PATH=/opt/venv/bin:... and
# PIP_CERT, pip's pointer to the system trust store, on import).
# The apt source is the one this machine uses (read from its apt configuration),
# so the Dockerfiles' `apt-get install` steps work inside the image too.
set -euo pipefail
out=${1:?usage: base.sh OUT.tar}
suite=bookworm
packages=python3,python3-venv,ca-certificates,passwd

# The first Debian archive this machine's apt is configured with (deb822 or one-line form).
mirror=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" { print $2 }' || true;
           cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" { print ($2 ~ /^\[/ ? $3 : $2) }' || true; } |
         grep -v -- '-security' | head -n 1 || true)
[[ -n $mirror ]] || { echo "base.sh: no Debian archive found in /etc/apt; set one up (apt-get update must work)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/tmp}/gpubatch-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >&2
# The machine's own additions to its trust store (a proxy's CA, say) go in too,
# so pip and apt inside the builds trust what this machine trusts.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >&2
fi
chroot "$root" /usr/bin/python3 -m venv /opt/venv
chroot "$root" /opt/venv/bin/python -m pip --version >&2
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
# An image has no init to create these; some tools expect them.
mkdir -p "$root/tmp" && chmod 1777 "$root/tmp"
tar --numeric-owner -C "$root" -cf "$out.partial" .
mv "$out.partial" "$out"
