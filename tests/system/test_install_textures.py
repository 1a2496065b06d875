"""`make demo-textures` (scripts/install-textures.sh): installs Debian's ufoai-textures where apt can,
and elsewhere says the demo data falls back to 3 surfaces instead of failing the build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "install-textures.sh"
BASH = shutil.which("bash") or "/bin/bash"


def run_script(archive: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT)],
        env={"UFOAI_TEXTURE_ARCHIVE": str(archive), "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_installed_archive_is_left_alone(tmp_path):
    archive = tmp_path / "0textures.pk3"
    archive.write_bytes(b"PK")
    done = run_script(archive, path=str(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_without_apt_it_says_what_the_demo_data_lacks_and_goes_on(tmp_path):
    empty_path = tmp_path / "bin"
    empty_path.mkdir()  # no apt-get, no sudo on this PATH
    done = run_script(tmp_path / "missing.pk3", path=str(empty_path))
    assert done.returncode == 0
    assert "ufoai-textures is not installed" in done.stderr and "3 surfaces" in done.stderr
