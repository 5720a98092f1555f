"""Debian's nginx in front of a test server, running the shipped ``deploy/nginx.conf``.

``scripts/ensure-nginx.sh`` (run by ``make test``) installs it as root. The
tests run nginx themselves as a foreground process (``daemon off``) with its
pid file, logs and temporary files in a temporary folder, listening with TLS
on a free loopback port. The site is ``deploy/nginx.conf`` itself: only the
listen address, the certificate paths, the access log's path (its format
kept) and the upstream server line are replaced, and each replacement must
match exactly once, so a change to the shipped file is a change to what the
tests run.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ferretdb import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
SITE = ROOT / "deploy" / "nginx.conf"
HOW_TO_ENABLE = "nginx is not installed (scripts/ensure-nginx.sh installs Debian's nginx-light as root)"

#: The shipped lines the tests replace, each found exactly once.
LISTEN = re.compile(r"^(\s*)listen 443 ssl;$", re.M)
CERTIFICATE = re.compile(r"^(\s*)ssl_certificate \S+;$", re.M)
CERTIFICATE_KEY = re.compile(r"^(\s*)ssl_certificate_key \S+;$", re.M)
UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:8080;$", re.M)
ACCESS_LOG = re.compile(
    r"^(\s*)access_log /var/log/nginx/study-time\.access\.log study_time_no_query;$", re.M
)


def find_binary() -> str | None:
    for candidate in ("/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def binary_or_skip() -> str:
    """The nginx binary; without it skip the test, or fail it under ``CI=true``."""
    binary = find_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{HOW_TO_ENABLE} (the nginx tests must run under CI)")
        pytest.skip(HOW_TO_ENABLE)
    return binary


def directive_seconds(text: str, name: str) -> list[float]:
    """Every value of ``name`` in ``text`` (e.g. ``proxy_read_timeout 120s;``), in seconds."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600}
    found = re.findall(rf"^\s*{name}\s+(\d+)(s|m|h)?;", text, re.M)
    return [float(value) * units[unit] for value, unit in found]


def _replace_once(pattern: re.Pattern, replacement: str, text: str) -> str:
    new, count = pattern.subn(lambda m: m.group(1) + replacement, text)
    if count != 1:
        raise AssertionError(
            f"deploy/nginx.conf: expected one line matching {pattern.pattern!r}, found {count}"
        )
    return new


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Nginx:
    """nginx serving the shipped site on ``127.0.0.1:<port>`` (TLS), proxying to ``upstream``."""

    def __init__(self, binary: str, folder: Path, upstream: str) -> None:
        self.binary = binary
        self.folder = folder
        self.upstream = upstream
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def site(self, cert: Path, key: Path) -> str:
        text = SITE.read_text()
        text = _replace_once(LISTEN, f"listen 127.0.0.1:{self.port} ssl;", text)
        text = _replace_once(CERTIFICATE, f"ssl_certificate {cert};", text)
        text = _replace_once(CERTIFICATE_KEY, f"ssl_certificate_key {key};", text)
        text = _replace_once(
            ACCESS_LOG, f"access_log {self.folder / 'access.log'} study_time_no_query;", text
        )
        return _replace_once(UPSTREAM_SERVER, f"server {self.upstream};", text)

    def main_config(self, site: Path) -> str:
        tmp = self.folder
        # As root nginx's workers would switch to "nobody", who cannot enter
        # pytest's private temporary folders; stay who we are.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp_paths = "\n".join(
            f"    {kind}_temp_path {tmp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}worker_processes 1;\n"
            f"pid {tmp / 'nginx.pid'};\n"
            f"error_log {tmp / 'error.log'} info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    access_log {tmp / 'access.log'};\n"
            f"{temp_paths}\n"
            f"    include {site};\n"
            "}\n"
        )

    def start(self, timeout: float = 10.0) -> Nginx:
        cert, key = self_signed_certificate(self.folder)
        site = self.folder / "study-time.conf"
        site.write_text(self.site(cert, key))
        config = self.folder / "nginx.conf"
        config.write_text(self.main_config(site))
        command = [
            self.binary,
            "-p",
            str(self.folder),
            "-e",
            str(self.folder / "error.log"),
            "-c",
            str(config),
        ]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=timeout)
        assert checked.returncode == 0, f"nginx -t rejected the configuration:\n{checked.stderr}"
        self.proc = subprocess.Popen(
            [*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.error_log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise AssertionError(f"nginx did not listen on {self.port} within {timeout}s:\n{self.error_log}")

    @property
    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text() if path.exists() else ""

    @property
    def access_log(self) -> str:
        path = self.folder / "access.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # nginx's fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
