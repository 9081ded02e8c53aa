#!/usr/bin/env bash
# Set a Jetson power mode and pin the clocks, so benchmarks are repeatable. Usage: sudo ./power-mode.sh [MODE]
set -euo pipefail
mode="${1:-0}"
command -v nvpmodel >/dev/null || { echo "power-mode.sh: nvpmodel not found: this is not a Jetson" >&2; exit 2; }
nvpmodel -m "$mode"
jetson_clocks
nvpmodel -q
