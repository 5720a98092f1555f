"""The set-up scripts `make test` runs on a fresh machine, run against stand-ins for their tools."""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _executable(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_building_ferretdb_succeeds_whatever_the_binary_prints_for_its_version(tmp_path):
    # A fresh `make test` failed with "Error 141" after a successful build:
    # `ferretdb --version | head -1` under pipefail dies of SIGPIPE when head
    # exits first. A stand-in `go` "builds" a ferretdb whose version text is
    # far larger than a pipe's buffer, which makes that race certain.
    gopath, module, fakebin = tmp_path / "gopath", tmp_path / "module", tmp_path / "bin"
    (module / "build" / "version").mkdir(parents=True)
    (module / "cmd" / "ferretdb").mkdir(parents=True)
    fakebin.mkdir()
    _executable(
        fakebin / "go",
        f"""\
        #!/bin/sh
        case "$1" in
          env) echo "{gopath}" ;;
          mod) printf '{{\\n\\t"Path": "x",\\n\\t"Dir": "{module}",\\n}}\\n' ;;
          build)
            out="$3"
            printf '#!/bin/sh\\nseq 1 300000\\n' >"$out"
            chmod +x "$out" ;;
          *) exit 3 ;;
        esac
        """,
    )
    env = {"PATH": f"{fakebin}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-ferretdb.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (gopath / "bin" / "ferretdb").exists()
    assert "built 1" in result.stderr  # the version's first line is still reported
    # The version file is written into a copy: the module cache is read-only.
    assert not (module / "build" / "version" / "version.txt").exists()
    assert os.listdir(gopath / "bin") == ["ferretdb"]
