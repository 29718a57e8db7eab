"""A TLS key protected by a passphrase is refused at start, and by `--check-config`, with
one line that names the key file and says scale0 needs it unencrypted.

Before, OpenSSL's own prompt ("Enter PEM pass phrase:") ran: a node started from a
terminal hung waiting for the passphrase, and one without a terminal (systemd)
failed with "[Errno 22] Invalid argument". The keys are made here by the openssl
command line, in both PEM forms an encrypted key comes in (PKCS#8 "ENCRYPTED PRIVATE
KEY" and the traditional "Proc-Type: 4,ENCRYPTED"); the node runs as a real
process, its standard input a terminal (a pty) or nothing at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from testkit.pki import make_ca, make_leaf, openssl
from testkit.procs import free_port, scale0_bin

from node.tls import CertStore, TLSConfig, TLSError

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

PASSPHRASE = "correct horse battery"
FORMS = {"pkcs8": ["pkey", "-aes256"], "traditional": ["pkey", "-traditional", "-aes256"]}


def encrypted_pair(d: Path, form: str) -> tuple[str, str]:
    """A certificate and its key, encrypted with PASSPHRASE in the PEM `form`."""
    make_ca(d)
    cert, plain = make_leaf(d, "a.test", "v1")
    key = d / f"a.test-{form}.key"
    openssl(*FORMS[form], "-in", plain, "-passout", f"pass:{PASSPHRASE}", "-out", key.name,
            cwd=d)
    assert "ENCRYPTED" in key.read_text()
    return cert, str(key)


def reason(key: str) -> str:
    return (f"--tls-key {key} is encrypted (protected by a passphrase): scale0 needs an "
            f"unencrypted key (openssl pkey -in {key} -out PLAIN.key, then give PLAIN.key, "
            "readable by the node's user only)")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stdin", ["terminal", "none"])
def test_the_node_refuses_an_encrypted_key_at_start(tmp_path: Path, form: str,
                                                    stdin: str) -> None:
    cert, key = encrypted_pair(tmp_path, form)
    main, sub = os.openpty() if stdin == "terminal" else (-1, subprocess.DEVNULL)
    try:
        done = subprocess.run(
            [scale0_bin(), "node", "--id", "enc", "--http", f"127.0.0.1:{free_port()}",
             "--https", f"127.0.0.1:{free_port()}", "--tls-cert", cert, "--tls-key", key,
             "--admin", f"127.0.0.1:{free_port()}", "--cache", "off"],
            stdin=sub, capture_output=True, text=True, timeout=60, start_new_session=True,
            check=False)
    finally:
        if main >= 0:
            os.close(main)
            os.close(sub)
    assert done.returncode == 2, done
    assert done.stderr == f"scale0: {reason(key)}\n", done.stderr
    assert PASSPHRASE not in done.stdout + done.stderr


def check_config(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([scale0_bin(), "node", "--check-config", str(conf)], check=False,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("form", FORMS)
def test_check_config_refuses_it_at_the_tls_key_line(tmp_path: Path, form: str) -> None:
    cert, key = encrypted_pair(tmp_path, form)
    conf = tmp_path / "node.toml"
    conf.write_text(f'id = "enc"\nhttps = "127.0.0.1:8443"\ntls_cert = ["{cert}"]\n'
                    f'tls_key = ["{key}"]\n')
    done = check_config(conf)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr == f"{conf}:4: {reason(key)}\n", done.stderr
    # the same file with the key decrypted is fine
    plain = tmp_path / "plain.key"
    openssl("pkey", "-in", key, "-passin", f"pass:{PASSPHRASE}", "-out", str(plain), cwd=tmp_path)
    conf.write_text(conf.read_text().replace(key, str(plain)))
    done = check_config(conf)
    assert done.returncode == 0 and done.stdout.startswith(f"{conf}: ok "), done


def test_a_reload_that_finds_an_encrypted_key_keeps_the_old_one(tmp_path: Path) -> None:
    """SIGHUP's path: the store refuses with the same reason and keeps serving the old."""
    cert, key = encrypted_pair(tmp_path, "pkcs8")
    live = tmp_path / "live.key"
    shutil.copy(tmp_path / "a.test-v1.key", live)
    store = CertStore(TLSConfig(((cert, str(live)),)))
    shutil.copy(key, live)
    with pytest.raises(TLSError) as refused:
        store.reload()
    assert str(refused.value) == reason(str(live))
    assert store.reloads == 0 and store.names() == ["*.a.test", "a.test"]
