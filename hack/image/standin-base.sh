#!/usr/bin/env bash
# A STAND-IN for the Dockerfile's base image (python:3.11-slim-bookworm), for machines
# that reach no container registry (ours: only Debian's, PyPI's and a few other package
# mirrors). It is NOT the official image: Debian's own python3 (3.11) from debootstrap,
# where the official image has CPython built into /usr/local. What matters for the image
# test is the same: Debian bookworm, a `python` 3.11 with venv, ca-certificates, and no
# passwd entry for uid 65532 (the official slim image has none either: that is how the
# operator's crash under 65532 reproduces).
#
#   hack/image/standin-base.sh            # make (or reuse) the cached tarball; print its path
#   hack/image/standin-base.sh --import   # ... and import it into docker under the name
#                                         # the Dockerfile's PYTHON_IMAGE default names
#
# The tarball is cached in ~/.cache/tokensync/image/, keyed by the suite, the package
# list, this script's hash and the host's CA bundle and pip configuration (both copied
# in, so that pip inside `docker build` gets through this network's egress proxy). With
# --import, an image of that name that is not a stand-in (a real python image a
# developer pulled) is left alone and used.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
suite=bookworm
# The official slim image's runtime packages (ca-certificates, netbase, tzdata), and
# Debian's python 3.11 with venv; python-is-python3 gives `python` as the official has.
packages=ca-certificates,netbase,tzdata,python3,python3-venv,python-is-python3
ca_bundle=/etc/ssl/certs/ca-certificates.crt
pip_conf=/etc/pip.conf
cache=${TOKENSYNC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tokensync}/image
tag=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$here/Dockerfile")
[[ -n "$tag" ]] || { echo "error: no 'ARG PYTHON_IMAGE=' default in Dockerfile" >&2; exit 1; }

import=0
case "${1:-}" in
  --import) import=1 ;;
  "") ;;
  *) echo "usage: $0 [--import]" >&2; exit 2 ;;
esac

# The mirror the host's apt uses (deb822 first, then a one-line sources.list).
mirror=${STANDIN_MIRROR:-}
if [[ -z "$mirror" && -r /etc/apt/sources.list.d/debian.sources ]]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z "$mirror" && -r /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

digest_of() { if [[ -r "$1" ]]; then sha256sum <"$1" | cut -c1-64; else echo none; fi; }
key=$(printf '%s\n' "$suite" "$packages" "$(digest_of "$0")" "$(digest_of "$ca_bundle")" \
  "$(digest_of "$pip_conf")" | sha256sum | cut -c1-16)
tarball="$cache/standin-python3.11-$suite-$key.tar"

make_rootfs() {
  command -v debootstrap >/dev/null \
    || { echo "error: debootstrap is missing: \`make tools\` installs it" >&2; exit 1; }
  mkdir -p "$cache"
  local root
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  # debootstrap mounts /proc and /sys inside the root; never leave them (or the tree)
  # behind when it fails half-way.
  # shellcheck disable=SC2064 # $root is fixed now, on purpose
  trap "umount -l '$root/proc' '$root/sys' 2>/dev/null || true; rm -rf --one-file-system '$root' '$tarball.partial'" EXIT
  echo "stand-in base: debootstrap $suite from $mirror (cold cache; a few minutes)" >&2
  local started=$SECONDS
  # (debootstrap checks the Release signature with gpgv --ignore-time-conflict: a
  # snapshot mirror's expired Valid-Until, which the host's apt is told to accept, is
  # no obstacle here.)
  debootstrap --variant=minbase --components=main --include="$packages" \
    "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/debootstrap.log" >&2; echo "error: debootstrap failed" >&2; exit 1; }

  # pip in `docker build` goes through the same proxy as the host: same CAs, same config.
  cp "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
  # Never a password into an image layer: user:password@ in an index or proxy URL is
  # dropped (and said), the rest of the configuration kept.
  if [[ -r "$pip_conf" ]]; then
    if grep -qE '://[^/@[:space:]]+@' "$pip_conf"; then
      echo "warning: $pip_conf names credentials in a URL; the stand-in gets it without them" >&2
    fi
    sed -E 's#://[^/@[:space:]]+@#://#g' "$pip_conf" >"$root/etc/pip.conf"
  fi
  # What a Debian "slim" image (the official one's base) does not ship either: docs
  # but their copyright files, man and info pages, translations, apt's caches.
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
    -exec rm -rf {} +
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/var/log/apt/*

  # The two properties the image test relies on.
  chroot "$root" python -c 'import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version'
  if chroot "$root" getent passwd 65532 >/dev/null; then
    echo "error: the stand-in has a passwd entry for uid 65532; the official image has none" >&2
    exit 1
  fi

  # /dev, /proc and /sys come from the container runtime, not from the image.
  tar --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* \
    -C "$root" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  # Older stand-ins (another key) are dead weight once this one exists.
  find "$cache" -maxdepth 1 -name 'standin-*.tar' -not -path "$tarball" -delete
  rm -rf --one-file-system "$root"
  trap - EXIT
  echo "stand-in base: $tarball ($((SECONDS - started)) s)" >&2
}

[[ -s "$tarball" ]] || make_rootfs

if ((import)); then
  label=dev.tokensync.stand-in
  if ! current=$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" \
    "$tag" 2>/dev/null); then
    current=absent
  fi
  case "$current" in
    "$key")
      echo "stand-in base: $tag already imported ($key)" >&2 ;;
    "" | "<no value>")
      echo "stand-in base: $tag exists and is not a stand-in: using it as it is" >&2 ;;
    *)
      # Absent, or an older stand-in: (re)import, with the official image's config.
      docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $label=$key" \
        --change "LABEL org.opencontainers.image.description=\"STAND-IN for $tag: Debian $suite by debootstrap (hack/image/standin-base.sh), not the official image\"" \
        --change 'CMD ["python3"]' \
        --message "stand-in for $tag (hack/image/standin-base.sh)" \
        "$tarball" "$tag" >/dev/null
      echo "stand-in base: imported $tarball as $tag (a STAND-IN, not the official image)" >&2 ;;
  esac
fi
echo "$tarball"
