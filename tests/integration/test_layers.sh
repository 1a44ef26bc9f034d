#!/bin/sh
# ps-worker is a plain user of libpsclient: its own sources (the trainer,
# models, data loaders, reports) use the library through ps.h alone.
# Checked on the built objects, so it cannot be talked around: no symbol
# they reference may come from the library's insides (its start-up and
# data plane) unless ps.h declares it, and their sources include none of
# those modules' headers.  Common utilities (logging, flags, safetensors,
# RNG, the layout type, traces) are fair game for any program.
. "$(dirname "$0")/lib.sh"

OBJ=$BUILD/obj
OWN="wkr_main wkr_train wkr_model wkr_data wkr_report wkr_plot"
INSIDE="worker/ps_api worker/wkr_client worker/wkr_arrays common/ps_boot common/ps_transport
    common/ps_tp_auth common/ps_wire common/ps_chunk common/ps_count common/ps_net"

missing=""
for o in $OWN; do
    [ -f "$OBJ/worker/$o.o" ] || missing="$missing worker/$o.o"
done
for o in $INSIDE; do
    [ -f "$OBJ/$o.o" ] || missing="$missing $o.o"
done
if [ -n "$missing" ]; then
    not_ok "objects to check are built (make all; missing:$missing)"
    exit 0
fi

# What ps.h declares (the rule the shared library's export map uses).
sed -n 's/^[a-z].*[ *]\(ps_[a-z_]*\)(.*/\1/p' worker/ps.h | sort -u >"$TMP/api"
for o in $INSIDE; do
    nm --defined-only -g "$OBJ/$o.o" | awk 'NF == 3 {print $3}'
done | sort -u >"$TMP/inside"
for o in $OWN; do
    nm -u "$OBJ/worker/$o.o" | awk '{print $NF}'
done | sort -u >"$TMP/used"
comm -12 "$TMP/used" "$TMP/inside" | comm -23 - "$TMP/api" >"$TMP/bad"
check "ps-worker's objects use $(comm -12 "$TMP/used" "$TMP/api" | wc -l | tr -d ' ') calls of ps.h and nothing else of the library's insides$(
    [ -s "$TMP/bad" ] && printf ' (but: %s)' "$(tr '\n' ' ' <"$TMP/bad")")" [ ! -s "$TMP/bad" ]
check "ps-worker uses the per-tensor push (the overlap rule through ps.h)" \
    grep -qx ps_push_tensor "$TMP/used"

headers=$(echo "$INSIDE" | tr -s ' \n' '\n' | sed 's|.*/||' | paste -sd '|' -)
for o in $OWN; do
    grep -HE "^#include \"($headers)\.h\"" worker/$o.c worker/$o.h 2>/dev/null
done >"$TMP/includes"
check "ps-worker's sources include no header of the library's insides$(
    [ -s "$TMP/includes" ] && printf ' (but: %s)' "$(tr '\n' ' ' <"$TMP/includes")")" \
    [ ! -s "$TMP/includes" ]
