"""What deploy/build-image.sh makes and refuses to make.

The image's files (tests, bench, dev dependencies, .git, caches, secrets), its size, its SBOM
and licence list, and the bad inputs: a missing, empty or wrong CA bundle, no network to the
package index, a checkout that builds but does not run. None of these leaves a tag behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.markers import Marker

from .conftest import ROOT, tool
from .docker_support import Docker, build_image

# The first test of a session may build the image from scratch (debootstrap, every wheel):
# minutes on a fresh machine, well past the suite's per-test timeout.
pytestmark = pytest.mark.timeout(2400)


ARTIFACTS = ROOT / "artifacts" / "image"
SIZE_GOAL = 300 * 1000**2  # the runtime image's goal (issue 17); reported, guarded below
# A regression past this fails. 350 -> 370 MB when the APIs began verifying the identity
# provider's JWT signatures (issue 21): cryptography, joserfc's RSA/EC backend, made the
# image 353 MB.
SIZE_LIMIT = 370 * 1000**2
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)
# A PEM block with a body, not just its first line: cryptography's own sources hold the
# armour lines as constants (serialization/ssh.py).
PRIVATE_KEY = re.compile(
    rb"-----BEGIN (?:RSA |EC |OPENSSH |ENCRYPTED )?PRIVATE KEY-----\r?\n"
    rb"[A-Za-z0-9+/=:, \r\n-]{64,}?-----END (?:RSA |EC |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"
)
MEMBERS = {
    f"dicomiso-{m}" for m in ("common", "client", "lookup", "retriever", "packager", "forwarder")
}
FORBIDDEN_PATHS = [
    (re.compile(r"(^|/)(tests?|testing_data)/"), "a test suite"),
    (re.compile(r"(^|/)bench/"), "the bench scripts"),
    (re.compile(r"(^|/)\.git(/|$)"), "a git directory"),
    (re.compile(r"(^|/)\.(pytest|mypy|ruff)_cache(/|$)"), "a tool cache"),
    (re.compile(r"^root/\.cache(/|$)|(^|/)\.cache/(pip|uv)(/|$)"), "a package cache"),
    (re.compile(r"^var/cache/apt/archives/.+\.deb$|^var/lib/apt/lists/[^/]+_"), "apt's cache"),
    (re.compile(r"(^|/)(secrets\.env|\.env|id_rsa|id_ed25519|credentials)$"), "a secret"),
    (re.compile(r"^run/secrets/"), "the build secret"),
    (re.compile(r"^src(/|$)"), "the build stage's source tree"),
    (re.compile(r"(^|/)bin/uv$"), "uv (build stage only)"),
]


def names_from_lock(*flags: str) -> set[str]:
    proc = subprocess.run(
        [tool("uv"), "export", "--frozen", "--no-hashes", "--offline", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = set()
    for line in proc.stdout.splitlines():
        if not line or not line[0].isalnum():
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue  # not for this platform (colorama on Windows)
        names.add(re.split(r"[=<>\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-"))
    return names


@pytest.fixture(scope="module")
def exported(docker: Docker, image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's file system as one tar (`docker export` of a created container)."""
    out = tmp_path_factory.mktemp("export") / "rootfs.tar"
    cid = docker.run("create", image).strip()
    try:
        docker.run("export", "-o", str(out), cid, timeout=300)
    finally:
        docker.run("rm", cid, check=False)
    return out


def test_private_key_pattern_finds_keys_not_armour_constants() -> None:
    """The scan below must find a real key file and pass a library that names the armour."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import ssh

    key = ec.generate_private_key(ec.SECP256R1())
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.OpenSSH):
        pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        assert PRIVATE_KEY.search(b"config\n" + pem), fmt
    assert PRIVATE_KEY.search(Path(ssh.__file__).read_bytes()) is None


def test_image_holds_no_tests_bench_dev_dependencies_caches_or_secrets(exported: Path) -> None:
    """Every path of the image checked; every dist-info is a runtime dependency; no file
    holds a private key."""
    runtime = names_from_lock("--no-dev", "--all-packages")
    dev_only = names_from_lock("--only-dev", "--all-packages") - runtime
    assert {"pytest", "moto", "ruff", "mypy"} <= dev_only
    bad: list[str] = []
    dists: set[str] = set()
    with tarfile.open(exported) as tar:
        for member in tar:
            path = member.name.lstrip("./")
            bad += [f"{path}: {why}" for pattern, why in FORBIDDEN_PATHS if pattern.search(path)]
            dist = re.search(r"site-packages/([^/]+)-[^-/]+\.dist-info/METADATA$", path)
            if dist:
                dists.add(dist.group(1).lower().replace("_", "-"))
            if member.isfile() and member.size < 2_000_000 and not path.startswith("usr/share"):
                head = tar.extractfile(member)
                assert head is not None
                if PRIVATE_KEY.search(head.read()):
                    bad.append(f"{path}: a private key")
    assert not bad, "\n".join(bad[:50])
    assert dists, "no installed distribution found in the image"
    assert not dists & dev_only, dists & dev_only
    assert dists <= runtime | MEMBERS, dists - runtime - MEMBERS


def test_build_secret_is_in_no_layer(docker: Docker, image: str, tmp_path: Path) -> None:
    """The certificates of the CA bundle passed as the build secret that are not public CAs of
    the image's own store (a proxy's CA, say) appear in no layer and no history entry."""
    host = set(PEM.findall(HOST_BUNDLE.read_bytes()))
    own = docker.run(
        "run", "--rm", "--network", "none", image, "cat", "/etc/ssl/certs/ca-certificates.crt"
    )
    private = host - set(PEM.findall(own.encode()))
    saved = tmp_path / "image.tar"
    docker.run("save", "-o", str(saved), image, timeout=300)
    with tarfile.open(saved) as outer:
        for member in outer:
            if not member.name.endswith("layer.tar"):
                continue
            layer = outer.extractfile(member)
            assert layer is not None
            with tarfile.open(fileobj=layer) as inner:
                for item in inner:
                    assert not item.name.startswith("run/secrets"), item.name
                    if item.isfile() and item.size < 2_000_000:
                        data = inner.extractfile(item)
                        assert data is not None
                        found = set(PEM.findall(data.read())) & private
                        assert not found, f"{item.name} holds a certificate of the build secret"
    history = docker.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
    assert "BEGIN CERTIFICATE" not in history


def test_size_sbom_and_licences_are_written_next_to_the_image(docker: Docker, image: str) -> None:
    """artifacts/image: image.tsv (tag, id, bytes, base), a CycloneDX SBOM naming every
    locked runtime package, and a licence for every Python and Debian package shipped."""
    tag, image_id, size, base = (ARTIFACTS / "image.tsv").read_text().strip().split("\t")
    assert tag == image and image_id == docker.inspect(image, "{{.Id}}")
    sys.stderr.write(f"\nimage {tag}: {int(size) / 1e6:.0f} MB on {base}\n")
    assert int(size) < SIZE_LIMIT, f"{int(size) / 1e6:.0f} MB (goal {SIZE_GOAL / 1e6:.0f} MB)"
    sbom = json.loads((ARTIFACTS / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"].startswith("1.")
    components = {c["name"].lower().replace("_", "-"): c for c in sbom["components"]}
    runtime = names_from_lock("--no-dev", "--all-packages")
    assert runtime | MEMBERS <= set(components), (runtime | MEMBERS) - set(components)
    assert all(  # the members are built here, from the checkout: no registry purl
        c.get("purl", "").startswith("pkg:pypi/") for n, c in components.items() if n not in MEMBERS
    )
    rows = [
        line.split("\t")
        for line in (ARTIFACTS / "licences.tsv").read_text().splitlines()[1:]
        if line
    ]
    licensed = {(kind, name.lower().replace("_", "-")) for kind, name, _, _ in rows}
    assert {("python", name) for name in components} <= licensed
    debian = [r for r in rows if r[0] == "debian"]
    assert any(r[1] == "libpython3.11-stdlib" or r[1].startswith("python3") for r in debian)
    unknown = [r for r in rows if r[3] == "UNKNOWN" and not r[1].startswith("dicomiso-")]
    assert len(unknown) <= len(rows) // 10, unknown  # a few Debian libraries lack DEP-5 files


def _assert_refused(
    docker: Docker, proc: subprocess.CompletedProcess[str], tag: str, says: str
) -> None:
    assert proc.returncode != 0, proc.stdout
    assert says in proc.stderr, proc.stderr[-3000:]
    assert not docker.has_image(tag), f"{tag} was tagged after a failed build"


@pytest.mark.parametrize(
    ("bundle", "says"),
    [
        ("missing", "is missing or unreadable"),
        ("empty", "holds no usable certificate"),
        ("garbage", "holds no usable certificate"),
        ("wrong-ca", "does not verify the package index"),
    ],
)
def test_bad_ca_bundle_is_a_clear_error(
    docker: Docker, tmp_path: Path, bundle: str, says: str
) -> None:
    """The build script checks the bundle, and that it verifies the index, before building."""
    path = tmp_path / f"{bundle}.pem"
    if bundle == "empty":
        path.write_text("")
    elif bundle == "garbage":
        path.write_text("not a certificate\n")
    elif bundle == "wrong-ca":
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=not the proxy", "-keyout", str(tmp_path / "key.pem"),
                "-out", str(path),
            ],
            capture_output=True,
            check=True,
        )  # fmt: skip
    tag = f"dicom-iso:refused-{bundle}"
    proc = build_image(docker, ROOT, tag, DICOMISO_CA_BUNDLE=str(path))
    _assert_refused(docker, proc, tag, says)


def test_no_network_to_the_package_index_is_a_clear_error(docker: Docker) -> None:
    """In a network namespace of its own (no route anywhere; the daemon's unix socket still
    answers) the script stops before building and says why."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux's unshare is missing"
    tag = "dicom-iso:refused-offline"
    proc = subprocess.run(
        [unshare, "--net", "bash", str(ROOT / "deploy" / "build-image.sh"), tag],
        cwd=ROOT,
        env=docker.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    _assert_refused(docker, proc, tag, "cannot reach the package index")


def test_an_image_that_does_not_start_is_not_tagged(
    docker: Docker, image: str, tmp_path: Path
) -> None:
    """A checkout whose packager module is broken builds, fails the smoke test, and leaves
    no tag (the script tags only after the four entry points import)."""
    clone = tmp_path / "checkout"
    subprocess.run(
        ["git", "clone", "--quiet", "--local", "--no-hardlinks", str(ROOT), str(clone)],
        check=True,
        capture_output=True,
    )
    for built in ROOT.glob("services/*/src/*/viewer_dist"):  # built, gitignored: not cloned
        copy = clone / built.relative_to(ROOT)
        shutil.copytree(built, copy)
        for file in copy.rglob("*"):
            os.utime(file)  # newer than the clone's sources: scripts/build-viewer is a no-op
    app = clone / "services/packager/src/dicomiso_packager/app.py"
    app.write_text("raise ImportError('broken on purpose')\n" + app.read_text())
    subprocess.run(
        ["git", "-C", str(clone), "-c", "user.name=ci", "-c", "user.email=ci@example.org"]
        + ["commit", "-qam", "broken"],
        check=True,
    )
    tag = "dicom-iso:refused-broken"
    proc = build_image(docker, clone, tag, DICOMISO_ARTIFACTS=str(tmp_path / "artifacts"))
    _assert_refused(docker, proc, tag, "fails its smoke test (nothing tagged)")
    assert not (tmp_path / "artifacts" / "sbom.cdx.json").exists()
