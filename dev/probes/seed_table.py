#!/usr/bin/env python3
"""The table of a probe over seeds (dev/probes/stage2_sweep.sh, query_count.sh): for each case,
the mean and standard deviation over its runs' logs OUT/CASE-SEED.log, then every run's RESULT.

  seed_table.py OUT MINUTES CPU CASES
    CASES: lines "name=title", in the table's order; MINUTES and CPU go into the note under it
Columns: caption exact, then those of shape and place (the shapes world's attribute row), baseline
exact, regeneration exact, round trip exact, round trip pixel MSE and the share of the caption's
gain that z recovers (stage 1's last health check) that any run reports. Other sources
(--data fashion-mnist) have no attributes: caption exact is class accuracy there.
"""
import glob, os, re, statistics, sys

out, minutes, cpu, cases = sys.argv[1:5]
cases = [line.split("=", 1) for line in cases.splitlines()]
columns = [("baseline exact", r"baseline_exact=([0-9.]+)"), ("regeneration exact", r"regen_exact=([0-9.]+)"),
           ("round trip exact", r"roundtrip_exact=([0-9.]+)")]


def figures(log):  # fractions; None for a run without a RESULT
    text = open(log).read()
    result = re.search(r"^RESULT .*", text, re.M)
    attrs = re.search(r"^\| caption attributes \| [0-9.]+% \(shape ([0-9.]+)%, colour [0-9.]+%, size [0-9.]+%, place ([0-9.]+)%\)", text, re.M)
    if not result:
        return None
    found = {"caption exact": float(re.search(r"caption_exact=([0-9.]+)", result[0])[1])}
    found.update({name: float(m[1]) for name, pattern in columns if (m := re.search(pattern, result[0]))})
    if attrs:
        found["shape"], found["place"] = float(attrs[1]) / 100, float(attrs[2]) / 100
    mse = (re.search(r"^\| round trip pixel MSE \| ([0-9.]+) \|", text, re.M)
           or re.search(r"roundtrip_mse=([0-9.]+)", result[0]))
    if mse:
        found["round trip MSE"] = float(mse[1])
    health = re.findall(r"^stage1  health [0-9]+: z recovers ([0-9.]+)% of the caption's gain", text, re.M)
    if health:  # stage 1's last health check (a run from --from 2 has none)
        found["z recovers"] = float(health[-1]) / 100
    return found


def cell(column, xs):
    if not xs:  # a column that other cases' runs report
        return "-"
    if column == "round trip MSE":  # a mean squared error, not a share
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}%" if len(xs) > 1 else f"{100 * xs[0]:.1f}%"


runs = {name: [f for f in (figures(log) for log in sorted(glob.glob(f"{out}/{name}-*.log"))) if f] for name, _ in cases}
optional = ["shape", "place"] + [c for c, _ in columns] + ["round trip MSE", "z recovers"]
shown = ["caption exact"] + [c for c in optional if any(c in r for rs in runs.values() for r in rs)]
print("| case | seeds | " + " | ".join(shown) + " |")
print("|---" * (len(shown) + 2) + "|")
for name, title in cases:
    if runs[name]:
        print(f"| {title} | {len(runs[name])} | " + " | ".join(cell(c, [r[c] for r in runs[name] if c in r]) for c in shown) + " |")
    else:
        print(f"| {title} | 0 | no RESULT |" + " |" * (len(shown) - 1))
print(f"\nTwo runs at a time at 1 thread each: {minutes} minutes for the last invocation, on {cpu}.\n")
for log in sorted(glob.glob(f"{out}/*.log")):
    found = re.search(r"^RESULT .*", open(log).read(), re.M)
    print(f"* {os.path.basename(log)[:-4]}: `{found[0] if found else 'no RESULT'}`")
