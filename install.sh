#!/usr/bin/env bash
# semmap's whole set-up on a fresh machine: system libraries, then the Python packages.
#
#   ./install.sh            what `semmap` needs to run
#   ./install.sh --tests    also what the test suite needs (headless Chromium for the viewer test)
#
# System libraries: Open3D's wheel links libusb-1.0, libGL, libEGL, libX11, libudev and libidn2,
# which pip cannot install. On Debian/Ubuntu they are apt-get installed (as root directly,
# otherwise through sudo); elsewhere the script says what to install and carries on.
# Python: run it inside the virtual environment you want semmap in. torch==2.13.0 comes first
# (the CPU build); the project accepts any torch compatible with it, so no CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")"

packages=(libusb-1.0-0 libgl1 libegl1 libx11-6 libudev1 libidn2-0 libgomp1)
for arg in "$@"; do
  case "$arg" in
    --tests) packages+=(chromium) ;;
    *) echo "install.sh: unknown option $arg (use --tests)" >&2; exit 2 ;;
  esac
done

if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing system packages: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
      sudo=()
    elif command -v sudo >/dev/null; then
      sudo=(sudo)
    else
      echo "install.sh: not root and no sudo: ask an administrator to run" >&2
      echo "  apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
else
  echo "install.sh: not a Debian/Ubuntu system; install these libraries with your package manager:" >&2
  echo "  libusb-1.0, libGL, libEGL, libX11, libudev, libidn2, libgomp$([[ " ${packages[*]} " == *" chromium "* ]] && echo ", chromium")" >&2
fi

python=$(command -v python || command -v python3)
"$python" -m pip install --quiet --upgrade pip
"$python" -m pip install --quiet torch==2.13.0
"$python" -m pip install --quiet -e ".[dev]"
echo "install.sh: done ($("$python" -c 'import sys; print(sys.prefix)'))"
