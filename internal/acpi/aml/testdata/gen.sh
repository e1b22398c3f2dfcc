#!/usr/bin/env bash
# Regenerates the iasl-compiled expected bytes (*.aml) from the ASL sources
# here. The tests compare the encoder with these files, and with a fresh
# iasl run when iasl is installed (scripts/acpica-tools.sh installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
for f in *.asl; do
	iasl -p "${f%.asl}" "$f" >/dev/null
done
