#!/bin/sh
# rootfs.sh BINARY DEST: installs BINARY, stripped of symbols, as
# DEST/usr/local/bin/quiver, with the shared libraries `ldd` lists for it
# (glibc, libgcc_s and the loader) at their usual paths under DEST.
# The Quiver image is that tree on `scratch`: no package manager, no
# libraries the binary does not load.
set -eu
bin=$1
dest=$2
install -D -m 0755 "$bin" "$dest/usr/local/bin/quiver"
strip --strip-all "$dest/usr/local/bin/quiver"
# ldd prints `name => /path (addr)` for libraries and `/path (addr)` for the loader.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
  while read -r lib; do
    cp -L --parents "$lib" "$dest"
  done
