#!/usr/bin/env bash
# Installs iasl (Debian's acpica-tools) if it is missing. The ACPI unit
# tests (internal/acpi) compare the AML encoder against iasl's output and
# decode the VMM's tables with `iasl -d`; without iasl they skip, saying so.
# Run by `make test-unit`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v iasl >/dev/null && exit 0
echo "acpica-tools.sh: installing acpica-tools (iasl) for the ACPI table tests" >&2
apt_install acpica-tools
command -v iasl >/dev/null || { echo "acpica-tools.sh: acpica-tools installed but no iasl in PATH" >&2; exit 1; }
