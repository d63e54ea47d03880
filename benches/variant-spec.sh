# Sourced by benches/worker-ab and benches/worker-pair: one variant's SPEC (comma-separated
# ENV=VALUE settings, and optionally bin=PATH for a worker binary kept from another build).
# parse_variant TOOL LABEL SPEC sets VARIANT_SETTINGS (array) and VARIANT_BIN (may be empty);
# returns 2 with a message on a malformed item.
parse_variant() {
    local tool=$1 label=$2 spec=$3 item items=()
    VARIANT_SETTINGS=()
    VARIANT_BIN=
    IFS=, read -ra items <<<"$spec"
    for item in "${items[@]}"; do
        case $item in
        bin=*) VARIANT_BIN=${item#bin=} ;;
        *=*) VARIANT_SETTINGS+=("$item") ;;
        "") ;;
        *) echo "$tool: '$item' in $label is not ENV=VALUE or bin=PATH" >&2; return 2 ;;
        esac
    done
}
