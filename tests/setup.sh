#!/usr/bin/env bash
# Everything the test suite needs on a fresh machine: the Python packages (pip, from pyproject's dev extra)
# and the system packages some tests drive (Debian's): dciodvfy (dicom3tools) validates every DICOM object
# the export writes, chromium and chromium-driver render the report page and the OHIF viewer (npm fetches it),
# orthanc with its DICOMweb and GDCM plugins is the PACS the DICOMweb tests pull from and send to. Where they
# cannot be installed
# (no apt-get, not root and no password-less sudo), it stops naming the one command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGINS=/usr/share/orthanc/plugins
# the Debian packages still missing, each named by the file that shows it is there (a machine whose Node.js
# already brings npm, e.g. nodesource's nodejs, which conflicts with Debian's npm, is asked for no npm)
missing_packages() {
    command -v dciodvfy >/dev/null || echo dicom3tools
    command -v chromium >/dev/null || echo chromium
    command -v chromedriver >/dev/null || echo chromium-driver
    [ -x /usr/sbin/Orthanc ] || echo orthanc
    [ -f $PLUGINS/libOrthancDicomWeb.so ] || echo orthanc-dicomweb
    [ -f $PLUGINS/libOrthancGdcm.so ] || echo orthanc-gdcm
    command -v npm >/dev/null || echo npm
}
SYSTEM_PACKAGES="$(missing_packages | tr '\n' ' ')"
if [ -n "$SYSTEM_PACKAGES" ]; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
    if [ "$sudo" = none ] || ! command -v apt-get >/dev/null; then
        echo "tests/setup.sh: the tests need Debian's $SYSTEM_PACKAGES; install them with:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y $SYSTEM_PACKAGES" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q $SYSTEM_PACKAGES >/dev/null 2>&1 ||
        { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q $SYSTEM_PACKAGES >/dev/null; }
fi
python -m pip install -q -e '.[dev]'
# the web viewer the viewer test opens: OHIF's prebuilt app, from npm's registry, unpacked once into .cache/
OHIF=3.13.2
if [ ! -f ".cache/ohif/$OHIF/package/dist/index.html" ]; then
    mkdir -p ".cache/ohif/$OHIF"
    (cd ".cache/ohif/$OHIF" && npm pack --silent "@ohif/app@$OHIF" >/dev/null && tar xzf "ohif-app-$OHIF.tgz" && rm "ohif-app-$OHIF.tgz")
fi
