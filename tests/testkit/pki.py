"""A test certificate authority made with the openssl command line (no extra Python
dependency): a CA, and leaf certificates it signs for a host and its subdomains."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d: Path) -> Path:
    """ca.pem and ca.key in `d`; the path of ca.pem."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=scale0 test CA",
            cwd=d)
    return d / "ca.pem"


def make_leaf(d: Path, host: str, tag: str) -> tuple[str, str]:
    """A certificate for `host` and *.host signed by the CA in `d`; OU=tag tells versions apart."""
    name = f"{host}-{tag}"
    (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{host},DNS:*.{host}\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={host}/OU={tag}",
            cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
            cwd=d)
    return str(d / f"{name}.pem"), str(d / f"{name}.key")
