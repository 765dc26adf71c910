#!/usr/bin/env bash
# Builds the dicom-iso image from this checkout, without Docker Hub if need be, behind a
# TLS-intercepting proxy if need be. Prints the image tag as its last line.
#
#   deploy/build-image.sh [TAG]            (default TAG: dicom-iso:<version>-<commit>)
#
# Steps: check the CA bundle; build the staff page's viewer (scripts/build-viewer, when it
# exists); choose the base (the official Python image if it is here or can be pulled, else one
# made with debootstrap from Debian's packages and Debian's python3.11, cached); stage a build
# context of exactly the files the Dockerfile copies; `docker build` with the CA bundle as a
# BuildKit secret (mounted in RUN steps only, never in a layer); smoke-test the result; only
# then tag it; write the SBOM (CycloneDX JSON) and the licence list to artifacts/image/.
#
# Settings (environment):
#   DOCKER                  the client, default /usr/bin/docker (Debian's, BuildKit built in)
#   DOCKER_HOST             the daemon, as usual
#   DICOMISO_CA_BUNDLE      PEM bundle the build trusts for the package indexes, default
#                           /etc/ssl/certs/ca-certificates.crt; "none" to pass none
#   DICOMISO_BASE           auto (default) | official | debian
#   DICOMISO_PYTHON_IMAGE   the official base, default the Dockerfile's PYTHON_IMAGE
#   DICOMISO_PULL_TIMEOUT   seconds to try pulling the official base, default 20
#   DICOMISO_DEBIAN_MIRROR  Debian mirror for debootstrap, default the host's apt source
#   DICOMISO_BASE_MAX_AGE_DAYS  rebuild the Debian base when older (security updates), default 7
#   DICOMISO_ARTIFACTS      where the SBOM and licences go, default artifacts/image
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DOCKER=${DOCKER:-/usr/bin/docker}
CA_BUNDLE=${DICOMISO_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
BASE_MODE=${DICOMISO_BASE:-auto}
PULL_TIMEOUT=${DICOMISO_PULL_TIMEOUT:-20}
MAX_AGE_DAYS=${DICOMISO_BASE_MAX_AGE_DAYS:-7}
ARTIFACTS=${DICOMISO_ARTIFACTS:-$ROOT/artifacts/image}
DEBIAN_SUITE=bookworm
# What the Debian base holds: the interpreter, the CA store (for TLS to S3, the HIS, SMTP),
# tzdata (log and audit times). Bump BASE_RECIPE when this list or make_debian_base changes.
DEBIAN_PACKAGES=python3.11,ca-certificates,tzdata
BASE_RECIPE=2
export DOCKER_BUILDKIT=1

die() {
  echo "build-image: $*" >&2
  exit 1
}
log() { echo "build-image: $*" >&2; }

[ -x "$DOCKER" ] || die "no docker client at $DOCKER (Debian: apt-get install docker.io)"
"$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || die "the docker daemon does not answer (DOCKER_HOST=${DOCKER_HOST:-default})"

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' services/packager/pyproject.toml | head -1)
COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo nogit)
TAG=${1:-dicom-iso:${VERSION}-${COMMIT}}

# ---- CA bundle: must be a readable PEM bundle that Python can load -----------------------
secret_args=()
if [ "$CA_BUNDLE" != none ]; then
  [ -r "$CA_BUNDLE" ] || die "CA bundle $CA_BUNDLE is missing or unreadable (DICOMISO_CA_BUNDLE)"
  python3 - "$CA_BUNDLE" <<'EOF' || die "CA bundle $CA_BUNDLE holds no usable certificate"
import ssl, sys
try:
    ctx = ssl.create_default_context(cafile=sys.argv[1])
except ssl.SSLError:
    sys.exit(1)
sys.exit(0 if ctx.cert_store_stats()["x509_ca"] > 0 else 1)
EOF
  secret_args=(--secret "id=ca,src=$CA_BUNDLE")
fi

# ---- the package index: reachable, and its certificate verifies with the bundle ----------
# The index is the one uv.lock was resolved against (the build downloads what the lock names).
INDEX=$(grep -m1 -o 'registry = "[^"]*"' uv.lock | cut -d'"' -f2)
[ -n "$INDEX" ] || die "no package index in uv.lock"
python3 - "$INDEX" "$CA_BUNDLE" <<'EOF' || exit 1
import ssl, sys, urllib.error, urllib.request
index, bundle = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=None if bundle == "none" else bundle)
try:
    urllib.request.urlopen(index.rstrip("/") + "/uv/", timeout=20, context=ctx).close()
except urllib.error.HTTPError:
    pass  # it answered
except urllib.error.URLError as exc:
    if isinstance(exc.reason, ssl.SSLCertVerificationError):
        sys.exit(f"build-image: the CA bundle {bundle} does not verify the package index "
                 f"({exc.reason.verify_message}); behind a TLS-intercepting proxy pass a bundle "
                 "holding the proxy's CA (DICOMISO_CA_BUNDLE)")
    sys.exit(f"build-image: cannot reach the package index from uv.lock ({exc.reason}); "
             "the build downloads the locked packages from it")
except OSError as exc:
    sys.exit(f"build-image: cannot reach the package index from uv.lock ({exc})")
EOF

# ---- the viewer the packager serves (built on the host, shipped in the wheel) ------------
if [ -f scripts/build-viewer ]; then
  log "building the viewer (scripts/build-viewer)"
  bash scripts/build-viewer >&2 || die "scripts/build-viewer failed"
fi

# ---- base image ----------------------------------------------------------------------------
OFFICIAL=${DICOMISO_PYTHON_IMAGE:-$(sed -n 's/^ARG PYTHON_IMAGE=//p' deploy/Dockerfile)}
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
  # The host's apt source for Debian (deb822 .sources or one-line lists): the mirror the
  # host already reaches (and trusts, behind a proxy).
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | head -1 || true)
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' \
    || true)
  [ -n "$uri" ] || die "no Debian mirror in /etc/apt/sources.list*: set DICOMISO_DEBIAN_MIRROR"
  echo "$uri"
}

make_debian_base() {
  local image=$1 mirror rootfs
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  mirror=${DICOMISO_DEBIAN_MIRROR:-$(debian_mirror)}
  rootfs=$(mktemp -d /var/tmp/dicomiso-rootfs.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$rootfs'" RETURN
  log "making the Debian base $image with debootstrap ($DEBIAN_SUITE, $DEBIAN_PACKAGES)"
  debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" "$DEBIAN_SUITE" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
  rm -f "$rootfs.log"
  # Where the official image has its interpreter, so the Dockerfile is the same for both bases.
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
  # As the official image does: no test suites of the standard library.
  find "$rootfs/usr/lib/python3.11" -depth -type d \( -name test -o -name tests -o -name idle_test \) \
    -exec rm -rf {} +
  # No package caches, lists or logs in the base.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  # Documentation goes, each package's copyright file (its licence) stays.
  find "$rootfs/usr/share/doc" -mindepth 1 -type f ! -name copyright -delete
  tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/usr/local/bin/python3"]' \
    --message "debootstrap $DEBIAN_SUITE minbase + $DEBIAN_PACKAGES (dicom-iso recipe $BASE_RECIPE)" \
    - "$image" >/dev/null || die "docker import of the Debian base failed"
}

stale() {
  local created now
  created=$("$DOCKER" image inspect -f '{{.Created}}' "$1")
  now=$(date +%s)
  (((now - $(date -d "$created" +%s)) > MAX_AGE_DAYS * 86400))
}

choose_base() {
  case "$BASE_MODE" in
    official | auto)
      if have_image "$OFFICIAL"; then
        echo "$OFFICIAL"
        return
      fi
      log "pulling $OFFICIAL (at most ${PULL_TIMEOUT}s)"
      if timeout "$PULL_TIMEOUT" "$DOCKER" pull -q "$OFFICIAL" >/dev/null 2>&1; then
        echo "$OFFICIAL"
        return
      fi
      [ "$BASE_MODE" = auto ] || die "cannot pull $OFFICIAL (DICOMISO_BASE=official)"
      log "cannot pull $OFFICIAL: using a base made from Debian's packages"
      ;;
    debian) ;;
    *) die "DICOMISO_BASE must be auto, official or debian, not $BASE_MODE" ;;
  esac
  local image="dicomiso-base/debian-python:${DEBIAN_SUITE}-3.11-r${BASE_RECIPE}"
  if ! have_image "$image" || stale "$image"; then
    make_debian_base "$image"
  else
    log "reusing the Debian base $image"
  fi
  echo "$image"
}
BASE=$(choose_base)

# ---- build context: exactly what the Dockerfile copies, from this checkout ---------------
CONTEXT=$(mktemp -d /var/tmp/dicomiso-context.XXXXXX)
IIDFILE=$(mktemp /var/tmp/dicomiso-iid.XXXXXX)
trap 'rm -rf "$CONTEXT" "$IIDFILE"' EXIT
{
  git ls-files -- pyproject.toml uv.lock .python-version 'libs/*/pyproject.toml' 'libs/*/src/*' \
    'services/*/pyproject.toml' 'services/*/src/*' deploy/healthcheck.py deploy/bucket_init.py \
    deploy/Dockerfile
  # Built, gitignored files the packages ship (the viewer bundle).
  find services/*/src -path '*/viewer_dist/*' -type f 2>/dev/null || true
} | grep -v -E '(^|/)__pycache__/|\.pyc$' | sort -u | tar -c -T - | tar -x -C "$CONTEXT"
# The staged context is already exactly what the image needs, so it carries no ignore file:
# the BuildKit of Debian's docker.io (20.10) does not read deploy/Dockerfile.dockerignore and
# does not apply its re-includes (`!libs/*/pyproject.toml` after `**`) as newer ones do.

log "building on $BASE"
"$DOCKER" build --network host --pull=false --iidfile "$IIDFILE" "${secret_args[@]}" \
  --build-arg "PYTHON_IMAGE=$BASE" --build-arg "REVISION=$COMMIT" --build-arg "VERSION=$VERSION" \
  -f "$CONTEXT/deploy/Dockerfile" "$CONTEXT" >&2 || die "docker build failed (nothing tagged)"
IMAGE_ID=$(cat "$IIDFILE")

# ---- smoke test before tagging: the four entry points import, the viewer is there --------
expect_viewer=""
[ -f scripts/build-viewer ] && expect_viewer=1
"$DOCKER" run --rm --network none --read-only --user 10001:10001 --cap-drop ALL \
  -e "EXPECT_VIEWER=$expect_viewer" "$IMAGE_ID" \
  python -c '
import importlib, importlib.metadata as md, os, pathlib
for m in ("dicomiso_lookup.app", "dicomiso_retriever.app", "dicomiso_packager.app", "dicomiso_forwarder.app"):
    importlib.import_module(m)
for s in ("dicomiso-lookup", "dicomiso-retriever", "dicomiso-packager", "dicomiso-forwarder"):
    assert any(e.name == s for e in md.entry_points(group="console_scripts")), s
import boto3, dicomiso_packager
boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")  # models load
viewer = pathlib.Path(dicomiso_packager.__file__).parent / "viewer_dist"
if os.environ.get("EXPECT_VIEWER"):
    assert any(p.is_file() for p in viewer.rglob("*")), "viewer_dist missing from the image"
' >&2 || die "the built image $IMAGE_ID fails its smoke test (nothing tagged)"
"$DOCKER" tag "$IMAGE_ID" "$TAG"

# ---- SBOM and licences, next to the image ---------------------------------------------------
mkdir -p "$ARTIFACTS"
"$DOCKER" build --network host --pull=false "${secret_args[@]}" \
  --build-arg "PYTHON_IMAGE=$BASE" --target sbom --output "type=local,dest=$ARTIFACTS" \
  -f "$CONTEXT/deploy/Dockerfile" "$CONTEXT" >&2 || die "SBOM build failed (image $TAG is built)"
# Every shipped package with its licence: the Python packages from the SBOM, the Debian
# packages of the base from dpkg's database and their copyright files (machine-readable
# `License:` fields where the package has them).
"$DOCKER" run --rm --network none --read-only --user 10001:10001 --cap-drop ALL \
  -v "$ARTIFACTS/sbom.cdx.json:/sbom.cdx.json:ro" "$TAG" python -c '
import json, pathlib, re
rows = []
for c in json.load(open("/sbom.cdx.json")).get("components", []):
    names = []
    for lic in c.get("licenses", []):
        if "expression" in lic:
            names.append(lic["expression"])
        else:
            names.append(lic["license"].get("id") or lic["license"].get("name", "?"))
    rows.append(("python", c["name"], c.get("version", ""), " AND ".join(dict.fromkeys(names)) or "UNKNOWN"))
status = pathlib.Path("/var/lib/dpkg/status")
for block in status.read_text().split("\n\n") if status.exists() else []:
    fields = dict(re.findall(r"^(Package|Version|Status): (.*)$", block, re.M))
    if "Package" not in fields or "installed" not in fields.get("Status", ""):
        continue
    copyright = pathlib.Path("/usr/share/doc", fields["Package"], "copyright")
    text = copyright.read_text(errors="replace") if copyright.exists() else ""
    found = dict.fromkeys(l.strip() for l in re.findall(r"^License: *(\S[^\n]*)$", text, re.M))
    lic = " / ".join(found) or ("see " + str(copyright) if text else "UNKNOWN")
    rows.append(("debian", fields["Package"], fields.get("Version", ""), lic))
print("kind\tname\tversion\tlicence")
for r in sorted(rows):
    print("\t".join(r))
' >"$ARTIFACTS/licences.tsv" || die "listing the licences failed (image $TAG is built)"
SIZE=$("$DOCKER" image inspect -f '{{.Size}}' "$TAG")
printf '%s\t%s\t%s\t%s\n' "$TAG" "$IMAGE_ID" "$SIZE" "$BASE" >"$ARTIFACTS/image.tsv"
log "image $TAG ($IMAGE_ID): $((SIZE / 1000000)) MB on $BASE; SBOM and licences in $ARTIFACTS"
echo "$TAG"
