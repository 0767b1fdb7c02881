#!/usr/bin/env bash
# Debian packages the demo and the tests use, installed when running as root with apt:
#   dataset-fashion-mnist  Fashion-MNIST files for the demo's benchmark (elsewhere torchvision downloads them)
#   chromium               headless browser for the report's test (the test is skipped without it)
set -uo pipefail
want=()
[ -d /usr/share/datasets/fashion-mnist ] || want+=(dataset-fashion-mnist)
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1; then want+=(chromium); fi
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null) \
    || echo "warning: could not install ${want[*]}" >&2
else
  echo "note: not root or no apt-get; install ${want[*]} yourself if you need them" >&2
fi
exit 0
