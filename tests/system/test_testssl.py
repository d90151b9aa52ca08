"""A ``testssl.sh`` audit of a real server (``--certfile/--keyfile``, default TLS profile).

testssl.sh (Debian package ``testssl.sh``, command ``testssl``) runs only the checks that matter for the
profile, so the run stays around a minute: protocols, cipher categories, forward secrecy, and the
vulnerability checks that apply to a TLS 1.2/1.3 server. Its JSON findings are parsed: any obsolete
cipher category "offered", any "VULNERABLE" / "potentially vulnerable", or any finding of severity LOW
or worse fails the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.system.test_tls import https_port, tls_args
from tests.worker.test_tls import PKI, make_pki

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
pytestmark = [
    pytest.mark.skipif(TESTSSL is None, reason="testssl.sh is not installed (.ci/run installs it)"),
    pytest.mark.timeout(300),
]

# -p protocols, -s cipher categories, -f forward secrecy; then Heartbleed, CCS, Ticketbleed, ROBOT,
# renegotiation, CRIME, POODLE, fallback SCSV, SWEET32, BEAST, LUCKY13, FREAK, LOGJAM, DROWN, RC4.
CHECKS = ("-p", "-s", "-f", "-H", "-I", "-T", "-BB", "-R", "-C", "-O", "-Z", "-W", "-A", "-L", "-F",
          "-J", "-D", "-4")  # fmt: skip
# Cipher categories testssl.sh calls obsolete or weak: none may be offered.
OBSOLETE = ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
            "cipherlist_3DES_IDEA", "cipherlist_AVERAGE")  # fmt: skip
BAD_SEVERITIES = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def audit(port: int, out_dir) -> list[dict]:
    """Run testssl.sh against 127.0.0.1:``port``; return its JSON findings."""
    report = out_dir / "testssl.json"
    got = subprocess.run(
        [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--ip", "127.0.0.1",
         *CHECKS, "--jsonfile", str(report), f"127.0.0.1:{port}"],
        capture_output=True, timeout=240, cwd=out_dir,
    )  # fmt: skip
    assert report.exists(), got.stdout.decode(errors="replace")[-3000:]
    return json.loads(report.read_text())


def problems(findings: list[dict]) -> list[str]:
    """Every finding that breaks the profile, as ``id: finding`` lines."""
    bad = []
    for f in findings:
        text = f["finding"].lower()
        if f["id"] in OBSOLETE and "not offered" not in text:
            bad.append(f"{f['id']}: {f['finding']}")
        elif "vulnerable" in text and "not vulnerable" not in text:
            bad.append(f"{f['id']}: {f['finding']}")
        elif f["severity"] in BAD_SEVERITIES:
            bad.append(f"{f['id']} ({f['severity']}): {f['finding']}")
    return bad


def test_testssl_finds_no_obsolete_cipher_and_no_vulnerability(run_supervisor, pki, tmp_path):
    sup = run_supervisor(*tls_args(pki, "--procs", "1"), "--app", "tests.apps.basic:app")
    findings = audit(https_port(sup), tmp_path)
    ids = {f["id"]: f["finding"] for f in findings}
    # The audit really ran the checks (a connection failure gives a short report without them).
    assert ids.get("TLS1_2") == "offered" and ids.get("TLS1_3", "").startswith("offered"), ids
    assert ids.get("cipherlist_STRONG") == "offered" and "LUCKY13" in ids, ids
    assert ids.get("TLS1") == "not offered" and ids.get("TLS1_1") == "not offered", ids
    assert problems(findings) == []


def test_the_audit_would_catch_cbc_suites():
    """The parser of the findings flags what testssl.sh reported for the old profile (CBC offered)."""
    old = [
        {"id": "cipherlist_AVERAGE", "severity": "LOW", "finding": "offered"},
        {
            "id": "LUCKY13",
            "severity": "LOW",
            "finding": "potentially vulnerable, uses TLS CBC ciphers",
        },
        {"id": "heartbleed", "severity": "OK", "finding": "not vulnerable, no heartbeat extension"},
    ]
    assert len(problems(old)) == 2
