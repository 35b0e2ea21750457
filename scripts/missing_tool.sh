# Sourced by the scripts that need tools the project does not install itself (cross compilers,
# qemu, wine, sanitizer runtimes). In CI (CI=true, as .ci/run sets it) a missing tool fails the
# script, so a check can never pass by not running; locally the script says so and skips.
#   missing_tool "what is missing (how to get it)"
missing_tool() {
    local script
    script="$(basename "$0")"
    if [ "${CI:-}" = true ]; then
        echo "$script: $1; CI=true, so this is a failure, not a skip" >&2
        exit 1
    fi
    echo "$script: $1; skipping (CI=true makes this a failure)"
    exit 0
}
