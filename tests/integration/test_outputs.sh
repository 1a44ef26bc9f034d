#!/bin/sh
# Seeing a run: --plot draws a PNG (checked by decoding it), --trace writes
# one Chrome trace with events from every rank, `ps-worker --plot-metrics`
# (what `make plot` runs) draws from a metrics file, and --config INI files
# set flags for both binaries with the command line overriding them.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
CHECK="$(dirname "$0")/check_outputs.py"

make_csv "$TMP/d.csv" 300 12 3
make_csv "$TMP/t.csv" 90 12 3 11
W="--data csv:$TMP/d.csv --test-data csv:$TMP/t.csv --model mlp --hidden 120 --batch-size 10 --epochs 4"
# A symlink planted at rank 0's predictable part name must be replaced,
# not followed (the file it points to stays as it was).
echo "not yours" >"$TMP/victim-trace"
ln -s "$TMP/victim-trace" "$TMP/trace.json.part-0"
psrun 120 2 "--chunk-kib 4 --trace $TMP/trace.json" 2 "$W --plot $TMP/run.png --trace $TMP/trace.json \
    --metrics $TMP/m.jsonl" "$TMP/run.log" || not_ok "job with --plot and --trace ran"

check "--plot: the PNG decodes and shows a picture ($($PY "$CHECK" png "$TMP/run.png" 2>&1))" \
    $PY "$CHECK" png "$TMP/run.png"
check "--trace: one file that parses, with events from all 4 ranks" \
    $PY "$CHECK" trace "$TMP/trace.json" 4 "compute + push" "pull wait" "server apply" evaluate
$PY "$CHECK" trace "$TMP/trace.json" 4 | sed 's/^/# /'
check "--trace: the per-rank parts were merged and removed" \
    sh -c "! ls '$TMP'/trace.json.part-* >/dev/null 2>&1"
check "--trace: a symlink planted at a part's name was not followed" \
    [ "$(cat "$TMP/victim-trace")" = "not yours" ]

# --plot without --metrics keeps the metrics in a temporary file: in
# $TMPDIR, under a name nobody can guess.  Worker 0 starts through sh,
# which plants symlinks at the old fixed name /tmp/ps-metrics-PID.jsonl
# (exec keeps its pid) and the same name in $TMPDIR; the files they point
# to must stay untouched.  While the job runs, the temporary file must
# show up in $TMPDIR.
mkdir "$TMP/td"
echo "not yours" >"$TMP/victim-metrics"
cat >"$TMP/plant.sh" <<EOF
#!/bin/sh
ln -s "$TMP/victim-metrics" "/tmp/ps-metrics-\$\$.jsonl" &&
    echo "/tmp/ps-metrics-\$\$.jsonl" >"$TMP/planted"
ln -s "$TMP/victim-metrics" "$TMP/td/ps-metrics-\$\$.jsonl"
exec "\$@"
EOF
TMPDIR="$TMP/td" timeout -k 5 120 mpirun --oversubscribe -np 1 "$SERVER" --quiet : \
    -np 1 sh "$TMP/plant.sh" "$WORKER" --progress none --data "csv:$TMP/d.csv" --model softmax \
    --batch-size 10 --epochs 1 --test-delay-ms 50 --plot "$TMP/tmpdir.png" \
    >"$TMP/tmpdir.log" 2>&1 &
job=$!
seen=""
while kill -0 "$job" 2>/dev/null; do
    seen=$(find "$TMP/td" -maxdepth 1 -type f -name 'ps-metrics-*.jsonl' | head -n 1)
    [ -n "$seen" ] && break
    sleep 0.05
done
wait "$job"
rc=$?
[ -s "$TMP/planted" ] && rm -f "$(cat "$TMP/planted")"
check "--plot without --metrics: the job ran and drew (exit $rc)" \
    sh -c "[ $rc -eq 0 ] && $PY '$CHECK' png '$TMP/tmpdir.png' >/dev/null"
check "--plot without --metrics: symlinks at the old fixed names were not followed" \
    [ "$(cat "$TMP/victim-metrics")" = "not yours" ]
check "--plot without --metrics: the temporary metrics file was in \$TMPDIR (${seen:-none seen})" \
    [ -n "$seen" ]
check "--plot without --metrics: it is gone after the run" \
    sh -c "[ -z \"\$(find '$TMP/td' -maxdepth 1 -type f -name 'ps-*')\" ]"

check "ps-worker --plot-metrics draws from a metrics file without MPI" \
    sh -c "'$WORKER' --plot-metrics '$TMP/m.jsonl' --plot '$TMP/again.png' &&
           $PY '$CHECK' png '$TMP/again.png' >/dev/null"
check "--plot-metrics on a file without metrics fails with a message" \
    sh -c "! '$WORKER' --plot-metrics '$TMP/d.csv' --plot '$TMP/x.png' 2>'$TMP/pm.err' &&
           grep -q 'no metrics lines' '$TMP/pm.err'"

# Config files: the [server] and [worker] sections; the command line wins.
cat >"$TMP/job.ini" <<INI
# both binaries read this file
[server]
lr = 0.2
momentum = 0.5
save = $TMP/from-config.st
[worker]
model = softmax
data = csv:$TMP/d.csv
batch-size = 20
epochs = 1
no-shuffle = true
INI
psrun 60 1 "--config $TMP/job.ini" 1 "--config $TMP/job.ini --epochs 2 --metrics $TMP/c.jsonl" \
    "$TMP/cfg.log"
check "--config: the job ran with the file's settings" [ -f "$TMP/from-config.st" ]
check "--config: the command line overrides the file (2 epochs, not 1)" \
    sh -c "[ \$(wc -l <'$TMP/c.jsonl') -eq 2 ]"
check "--config: the file's lr reached the server (metadata lr 0.2)" \
    grep -q '"lr":"0.20000000000000001"' "$TMP/from-config.st"
printf '[worker]\nmodel = softmax\nbatch_size = 3\n' >"$TMP/bad.ini"
psrun 60 1 "" 1 "--config $TMP/bad.ini" "$TMP/bad.log"
check "--config: an unknown key is an error naming FILE:LINE" \
    grep -q "bad.ini:3: unknown key 'batch_size' in \[worker\]" "$TMP/bad.log"

# deploy/job.ini, the example the Slurm script uses, is accepted by both.
psrun 120 1 "--config deploy/job.ini" 2 "--config deploy/job.ini --steps 5 --metrics $TMP/d.jsonl" \
    "$TMP/deploy-ini.log"
check "deploy/job.ini works for both binaries (a 5-step job ran)" \
    grep -q '"step":5' "$TMP/d.jsonl"
