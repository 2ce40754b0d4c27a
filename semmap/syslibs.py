"""System libraries the Python wheels link but pip cannot install, and what to say when one is missing.

Open3D's wheel links ``libusb-1.0`` (RealSense support), ``libGL``, ``libEGL``, ``libX11``,
``libudev`` and ``libidn2``; pyrealsense2 links ``libusb-1.0``; torch and Open3D's CPU kernels
use ``libgomp``. On a fresh Debian/Ubuntu machine ``install.sh`` installs them; a user who
skipped it gets :func:`missing_library_message` instead of an ImportError traceback.
"""

from __future__ import annotations

import re

SYSTEM_LIBRARIES: dict[str, str] = {
    "libusb-1.0.so.0": "libusb-1.0-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libX11.so.6": "libx11-6",
    "libudev.so.1": "libudev1",
    "libidn2.so.0": "libidn2-0",
    "libgomp.so.1": "libgomp1",
}
"""Shared object -> the Debian/Ubuntu package that provides it."""

_MISSING = re.compile(r"(lib[\w.+-]+\.so(?:\.\d+)*): cannot open shared object file")


def missing_library(exc: BaseException) -> str | None:
    """The shared object an ImportError / OSError says it could not load, or None."""
    m = _MISSING.search(str(exc))
    return m.group(1) if m else None


def missing_library_message(exc: BaseException) -> str | None:
    """What to tell the user when ``exc`` is a missing system library; None for other errors."""
    lib = missing_library(exc)
    if lib is None:
        return None
    package = SYSTEM_LIBRARIES.get(lib)
    if package is None:
        return (f"the system library {lib} is missing ({exc}). Install the package that provides it "
                f"(Debian/Ubuntu: apt-file search {lib}), or run ./install.sh, which installs all of semmap's.")
    all_packages = " ".join(SYSTEM_LIBRARIES.values())
    return (
        f"the system library {lib} is missing; it comes with the package {package}. Install it with\n"
        f"  sudo apt-get install -y {package}\n"
        f"(or all that semmap needs: sudo apt-get install -y {all_packages}; ./install.sh does this)"
    )
