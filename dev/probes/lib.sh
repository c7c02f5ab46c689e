# Sourced by the probes that run cases over seeds (stage2_sweep.sh, query_count.sh).

# run_and_tabulate OUT NAME CASES COMMAND...: runs the commands, two at a time, each into the log
# named by its --out (DIR.log beside DIR; --out comes last); then OUT/NAME.md gets seed_table.py's
# table of the cases ("name=title" lines, the logs OUT/name-SEED.log) and is printed
run_and_tabulate() {
  local out=$1 name=$2 cases=$3 t0=$SECONDS
  shift 3
  printf '%s\n' "$@" | xargs -P 2 -I{} bash -c '{} > "$(echo "{}" | sed "s/.*--out //").log" 2>&1 || echo "failed: {}" >&2'
  python3 dev/probes/seed_table.py "$out" $(( (SECONDS - t0 + 30) / 60 )) "$(lscpu | sed -n 's/^Model name: *//p')" "$cases" > "$out/$name.md"
  cat "$out/$name.md"
}
