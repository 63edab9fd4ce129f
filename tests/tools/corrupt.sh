# Bash helpers that damage COPIES of safetensors checkpoints in controlled ways, for the error
# catalogue (tests/e2e/errors.test.sh) and the fault tests (tests/e2e/faults.test.sh).
# Plain bash + coreutils (od, dd, head, tail, truncate); sourced, not run.
#
# A safetensors file is: 8-byte little-endian header length N, N bytes of JSON header, data.
# The fixtures' headers are one line of JSON, so sed expressions can edit them exactly.

# st_header_len FILE: prints N.
st_header_len() {
    od -An -tu8 -N8 "$1" | tr -d ' '
}

# st_header FILE: prints the JSON header (with its trailing padding).
st_header() {
    local n; n=$(st_header_len "$1")
    dd if="$1" iflag=skip_bytes,count_bytes skip=8 count="$n" status=none
}

# u64le N: writes N as 8 little-endian bytes to stdout.
u64le() {
    local n=$1 i fmt=""
    for i in 0 1 2 3 4 5 6 7; do
        fmt+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255)))
    done
    printf "$fmt"
}

# st_set_header_len FILE N: overwrites the 8-byte length field only.
st_set_header_len() {
    u64le "$2" | dd of="$1" bs=1 count=8 conv=notrunc status=none
}

# st_edit_header FILE SED_EXPR: rewrites the header through sed (any new length), keeping the data.
st_edit_header() {
    local f=$1 expr=$2 n hdr
    n=$(st_header_len "$f")
    hdr=$(st_header "$f" | sed -e "$expr")
    {
        u64le "${#hdr}"
        printf '%s' "$hdr"
        tail -c +$((9 + n)) "$f"
    } >"$f.edit" && mv "$f.edit" "$f"
}

# st_offsets FILE TENSOR: prints "begin end" of the tensor's data_offsets (relative to the data).
st_offsets() {
    local entry
    entry=$(st_header "$1" | grep -o "\"$2\":{[^}]*}") || return 1
    entry=${entry##*\"data_offsets\":[}
    entry=${entry%%]*}
    echo "${entry/,/ }"
}

# st_poke FILE TENSOR BYTE_OFFSET HEX...: overwrites bytes inside the tensor's data,
# e.g. st_poke f model.norm.weight 2 c0 7f  (element 1 of a BF16 tensor becomes NaN).
st_poke() {
    local f=$1 t=$2 off=$3; shift 3
    local n begin end fmt="" b
    n=$(st_header_len "$f")
    read -r begin end < <(st_offsets "$f" "$t") || return 1
    for b in "$@"; do fmt+="\\x$b"; done
    printf "$fmt" | dd of="$f" bs=1 seek=$((8 + n + begin + off)) conv=notrunc status=none
}

# st_add_tensor FILE NAME DTYPE SHAPE NBYTES: appends a tensor of NBYTES zero bytes, e.g.
# st_add_tensor f model.layers.0.self_attn.q_proj.bias BF16 4 8  (SHAPE is the JSON list body).
st_add_tensor() {
    local f=$1 name=$2 dtype=$3 shape=$4 nbytes=$5 n size data
    n=$(st_header_len "$f")
    size=$(stat -c %s "$f")
    data=$((size - 8 - n))
    st_edit_header "$f" "s/^{/{\"$name\":{\"dtype\":\"$dtype\",\"shape\":[$shape],\"data_offsets\":[$data,$((data + nbytes))]},/"
    head -c "$nbytes" /dev/zero >>"$f"
}
