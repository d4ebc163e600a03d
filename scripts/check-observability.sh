#!/usr/bin/env bash
# Checks the operations kit in deploy/observability/ with promtool: the alert rules' syntax, their
# unit tests (alerts_test.yml) and the compose profile's Prometheus configuration. The Go tests of
# deploy/observability check the rest (metric names, dashboard, provisioning) without promtool.
# promtool comes with Prometheus; on Debian and Ubuntu: apt-get install prometheus.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "promtool not found: install Prometheus (Debian/Ubuntu: apt-get install prometheus)" >&2
  exit 1
fi
dir=deploy/observability
promtool --version 2>&1 | head -n 1

promtool check rules "$dir/alerts.yml"
# rule_files in the test file are relative to it, so this works from any directory.
promtool test rules "$dir/alerts_test.yml"

# prometheus.yml names the rules by their path in the container (/etc/prometheus/alerts.yml); check it
# against a copy that names them by their path here, so the rule files are checked as loaded.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$dir/alerts.yml" "$tmp/alerts.yml"
sed 's#/etc/prometheus/alerts.yml#alerts.yml#' "$dir/prometheus.yml" >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"
