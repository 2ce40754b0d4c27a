"""First contact: the README's set-up commands are what CI runs, and a missing system library is explained."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from semmap.syslibs import SYSTEM_LIBRARIES, missing_library_message

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The one-line commands of the README's Quickstart bash blocks."""
    text = (REPO / "README.md").read_text()
    quick = text[text.index("## Quickstart"): text.index("\n## ", text.index("## Quickstart") + 1)]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", quick, re.S)]


def ci_commands() -> list[str]:
    """The commands .ci/run executes (after its `cd` to the repository root)."""
    lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    return body[body.index('cd "$(dirname "$0")/.."') + 1:]


def test_readme_has_exactly_two_setup_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].endswith("semmap demo") and cmds[1].endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command_character_for_character():
    """CI runs the README's test command split at its `&&`: the install part, then the test part."""
    test_cmd = readme_commands()[1]
    assert ci_commands() == [part.strip() for part in test_cmd.split("&&")]


def test_demo_and_test_commands_install_the_same_way():
    demo, tests = (c.split("&&")[0].strip() for c in readme_commands())
    assert demo == "./install.sh" and tests == "./install.sh --tests"


def test_install_script_covers_every_library_semmap_explains():
    """Every system library the error message knows about is installed by install.sh, and the script parses."""
    script = (REPO / "install.sh").read_text()
    listed = re.search(r"packages=\(([^)]*)\)", script).group(1).split()
    assert set(SYSTEM_LIBRARIES.values()) == set(listed)
    assert "torch==2.13.0" in script and '-e ".[dev]"' in script
    subprocess.run(["bash", "-n", str(REPO / "install.sh")], check=True)
    bad = subprocess.run(["bash", str(REPO / "install.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --nope" in bad.stderr


@pytest.mark.parametrize("lib", sorted(SYSTEM_LIBRARIES))
def test_missing_library_message_names_library_package_and_command(lib):
    err = ImportError(f"{lib}: cannot open shared object file: No such file or directory")
    msg = missing_library_message(err)
    assert lib in msg and f"apt-get install -y {SYSTEM_LIBRARIES[lib]}" in msg
    assert missing_library_message(ImportError("No module named 'foo'")) is None


BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib.abc, sys

    class MissingSystemLibrary(importlib.abc.MetaPathFinder):
        # what the dynamic loader reports when libusb-1.0 is not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("open3d", "pyrealsense2"):
                raise ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")

    sys.meta_path.insert(0, MissingSystemLibrary())
    from semmap.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("argv", [["demo", "--frames", "4"], ["map", "synthetic:room", "--out", "{tmp}/m"]])
def test_semmap_explains_a_missing_system_library_instead_of_a_traceback(argv, tmp_path):
    """Open3D's import made to fail the way it does without libusb: semmap names library, package, command."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    r = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, *argv], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    assert "libusb-1.0.so.0 is missing" in r.stderr and "sudo apt-get install -y libusb-1.0-0" in r.stderr
