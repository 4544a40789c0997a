#!/usr/bin/env python3
"""Strata's benchmark harness (run through hack/bench.sh).

Every scenario runs for every runtime in the same round, rounds repeated, so drift
of this shared machine hits all runtimes alike. Times are per operation in ms."""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--work", required=True)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--batch", type=int, default=20)
ap.add_argument("--out", default="bench-results.json")
ap.add_argument("--scale", default="0,100,1000",
                help="numbers of sleeping containers for the cost-as-work-grows rows ('' leaves them out)")
ap.add_argument("--scale-ops", type=int, default=20, help="operations timed per level in those rows")
ap.add_argument("--settle", type=float, default=0.3, help="seconds of rest before each timed batch")
args = ap.parse_args()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The runtimes' state roots: a tmpfs (hack/bench.sh mounts it), as /run is on
# a usual host. On a disk filesystem each new file or directory costs an
# inode allocation that grows with the files deleted in the last seconds
# (ext4 skips recently deleted inodes), which is the disk's cost, not the
# runtime's.
STATE = os.path.join(args.work, "run")
STRATA = os.path.join(ROOT, "target/release/strata")
BUNDLE = os.path.join(args.work, "bundle")
ROOTFS = os.path.join(BUNDLE, "rootfs")
DEVNULL = subprocess.DEVNULL

config = json.load(open(os.path.join(ROOT, "bundles/hello/config.json")))
config["ociVersion"] = "1.0.2"  # crun 1.8 refuses newer versions
config["root"]["path"] = "rootfs"
config["process"]["args"] = ["/bin/true"]
json.dump(config, open(os.path.join(BUNDLE, "config.json"), "w"))
sleeper = dict(config, process=dict(config["process"], args=["sleep", "1000"]))
os.makedirs(os.path.join(args.work, "sleeper"), exist_ok=True)
os.symlink(ROOTFS, os.path.join(args.work, "sleeper/rootfs"))
sleeper["root"] = {"path": ROOTFS, "readonly": True}
json.dump(sleeper, open(os.path.join(args.work, "sleeper/config.json"), "w"))

RUNTIMES = {
    "strata": [STRATA],
    # Like for like with crun below: no cgroup at all.
    "strata-nocg": [STRATA, "--cgroup-manager=disabled"],
    "runc": [shutil.which("runc") or "/usr/sbin/runc"],
    # Debian's crun cannot raise RLIMIT_MEMLOCK here, so its cgroup manager is off.
    "crun": [shutil.which("crun") or "/usr/bin/crun", "--cgroup-manager=disabled"],
}
counter = [0]


ERRLOG = open(os.path.join(args.work, "stderr.log"), "w")


def rt(name, *a, **kw):
    # Output to files, never pipes: a detached container keeps the caller's stdio
    # open, and a pipe would then never reach end-of-file.
    root = os.path.join(STATE, "state-" + name)
    return subprocess.run(RUNTIMES[name] + ["--root", root] + list(a), stdout=DEVNULL, stderr=ERRLOG, check=True, **kw)


def new_id():
    counter[0] += 1
    return "b%d" % counter[0]


def timed(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) * 1000 / n


def scen_run(name):
    return lambda: rt(name, "run", "--bundle", BUNDLE, new_id())


def scen_split(name):
    def op():
        i = new_id()
        rt(name, "create", "--bundle", BUNDLE, i)
        rt(name, "start", i)
        while b'"stopped"' not in subprocess.run(RUNTIMES[name] + ["--root", os.path.join(STATE, "state-" + name), "state", i], stdout=subprocess.PIPE, stderr=ERRLOG).stdout:
            time.sleep(0.0005)
        rt(name, "delete", i)
    return op


def floor_run():
    subprocess.run(["unshare", "--pid", "--mount", "--uts", "--ipc", "--net", "--fork", "chroot", ROOTFS, "/bin/true"], check=True)


def concurrent(name, n=50):
    def op():
        ids = [new_id() for _ in range(n)]
        root = os.path.join(STATE, "state-" + name)
        procs = [subprocess.Popen(RUNTIMES[name] + ["--root", root, "run", "--detach", "--bundle", BUNDLE, i], stdout=DEVNULL, stderr=DEVNULL) for i in ids]
        for p in procs:
            p.wait()
        procs = [subprocess.Popen(RUNTIMES[name] + ["--root", root, "delete", "--force", i], stdout=DEVNULL, stderr=DEVNULL) for i in ids]
        for p in procs:
            p.wait()
    return op


# Long-running containers for exec.
exec_pids = {}
for name in RUNTIMES:
    rt(name, "run", "--detach", "--bundle", os.path.join(args.work, "sleeper"), "sleeper")
    st = subprocess.run(RUNTIMES[name] + ["--root", os.path.join(STATE, "state-" + name), "state", "sleeper"], stdout=subprocess.PIPE, stderr=ERRLOG, check=True)
    exec_pids[name] = json.loads(st.stdout)["pid"]


def scen_exec(name):
    return lambda: rt(name, "exec", "sleeper", "/bin/true")


def floor_exec():
    pid = str(exec_pids["strata"])
    subprocess.run(["nsenter", "-t", pid, "--mount", "--uts", "--ipc", "--net", "--pid", "/bin/true"], check=True)


# Rootless: the same run by an unprivileged user (hack/bench.sh makes one), with
# runc's rootless config (a user namespace mapping the user's ids, no cgroup).
ROOTLESS = {}
if os.environ.get("STRATA_BENCH_USER"):
    uid, gid = os.environ["STRATA_BENCH_USER"].split(":")
    as_user = ["setpriv", "--reuid", uid, "--regid", gid, "--clear-groups", "--"]
    rl = json.loads(json.dumps(config))
    rl["linux"]["namespaces"] = [n for n in rl["linux"]["namespaces"] if n["type"] not in ("user", "cgroup")] + [{"type": "user"}]
    rl["linux"]["uidMappings"] = [{"containerID": 0, "hostID": int(uid), "size": 1}]
    rl["linux"]["gidMappings"] = [{"containerID": 0, "hostID": int(gid), "size": 1}]
    rl["linux"].pop("resources", None)
    rl["mounts"] = [dict(m, options=[o for o in m.get("options", []) if not o.startswith(("uid=", "gid="))])
                    for m in rl["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    rl["root"] = {"path": ROOTFS, "readonly": True}
    os.makedirs(os.path.join(args.work, "rootless"), exist_ok=True)
    json.dump(rl, open(os.path.join(args.work, "rootless/config.json"), "w"))
    os.chmod(args.work, 0o711)
    for name, cmd in [("strata", [STRATA]), ("runc", RUNTIMES["runc"][:1]), ("crun", RUNTIMES["crun"][:1])]:
        state = os.path.join(STATE, "rl-state-" + name)
        os.makedirs(state, exist_ok=True)
        os.chown(state, int(uid), int(gid))
        ROOTLESS[name] = as_user + cmd + ["--root", state]


def scen_rootless(name):
    return lambda: subprocess.run(ROOTLESS[name] + ["run", "--bundle", os.path.join(args.work, "rootless"), new_id()],
                                  stdout=DEVNULL, stderr=ERRLOG, check=True)


scenarios = {
    "run /bin/true": {**{n: scen_run(n) for n in RUNTIMES}, "floor": floor_run},
    "create+start+delete": {n: scen_split(n) for n in RUNTIMES},
    "exec /bin/true": {**{n: scen_exec(n) for n in RUNTIMES}, "floor": floor_exec},
    "50 concurrent run+delete (total)": {n: concurrent(n) for n in RUNTIMES},
}
if ROOTLESS:
    scenarios["rootless run /bin/true"] = {n: scen_rootless(n) for n in ROOTLESS}
results = {s: {n: [] for n in fns} for s, fns in scenarios.items()}
try:
    for r in range(args.rounds):
        for s, fns in scenarios.items():
            batch = 1 if "concurrent" in s else args.batch
            # The runtimes' order changes from round to round, and each batch
            # starts on a settled machine: the kernel tears namespaces down
            # after the processes are gone (network namespaces in a work queue),
            # and that work would otherwise land on whichever batch came next.
            order = list(fns.items())
            random.Random(r).shuffle(order)
            for n, fn in order:
                time.sleep(args.settle)
                results[s][n].append(timed(fn, batch))
        print("round %d/%d done" % (r + 1, args.rounds), file=sys.stderr)
finally:
    # Nothing outlives the benchmark, whatever failed.
    for name in RUNTIMES:
        root = os.path.join(STATE, "state-" + name)
        for i in os.listdir(root) if os.path.isdir(root) else []:
            subprocess.run(RUNTIMES[name] + ["--root", root, "delete", "--force", i], stdout=DEVNULL, stderr=DEVNULL)


def quiet(limit=60.0):
    """Waits (up to LIMIT seconds) until the CPUs are nine tenths idle over
    half a second: the kernel tears down the network namespaces of deleted
    containers in the background, a second or more of CPU per thousand, and
    that must not land on the next runtime's measurements."""
    def busy_idle():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f), f[3] + f[4]
    end = time.monotonic() + limit
    while time.monotonic() < end:
        t0, i0 = busy_idle()
        time.sleep(0.5)
        t1, i1 = busy_idle()
        if t1 > t0 and (i1 - i0) / (t1 - t0) >= 0.9:
            return


def scale(name, levels, k):
    """Cost as work grows: with LEVEL sleeping containers of this runtime
    already there, the median per-operation time of run, exec, state, list
    and delete (of a created container), and the runtime's state bytes per
    container. Levels climb; every container goes at the end."""
    root = os.path.join(STATE, "scale-" + name)
    os.makedirs(root, exist_ok=True)

    def op(*a):
        subprocess.run(RUNTIMES[name] + ["--root", root] + list(a), stdout=DEVNULL, stderr=ERRLOG, check=True)

    def each(fn):
        xs = []
        for _ in range(k):
            t = time.perf_counter()
            fn()
            xs.append((time.perf_counter() - t) * 1000)
        return statistics.median(xs)

    sleeper_bundle = os.path.join(args.work, "sleeper")
    out = {}
    made = 0
    try:
        op("run", "--detach", "--bundle", sleeper_bundle, "target")
        for level in levels:
            while made < level:
                op("run", "--detach", "--bundle", sleeper_bundle, "idle%d" % made)
                made += 1
            quiet()
            row = {
                "run": each(lambda: op("run", "--bundle", BUNDLE, new_id())),
                "exec": each(lambda: op("exec", "target", "/bin/true")),
                "state": each(lambda: op("state", "target")),
                "list": each(lambda: op("list")),
            }
            ids = [new_id() for _ in range(k)]
            for i in ids:
                op("create", "--bundle", BUNDLE, i)
            xs = []
            for i in ids:
                t = time.perf_counter()
                op("delete", "--force", i)
                xs.append((time.perf_counter() - t) * 1000)
            row["delete"] = statistics.median(xs)
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
            row["state bytes per container"] = size / (made + 1)
            out[level] = row
            print("scale: %s at %d done" % (name, level), file=sys.stderr)
    finally:
        for i in os.listdir(root):
            subprocess.run(RUNTIMES[name] + ["--root", root, "delete", "--force", i], stdout=DEVNULL, stderr=DEVNULL)
    return out


levels = [int(x) for x in args.scale.split(",") if x.strip()]
scale_results = {n: scale(n, levels, args.scale_ops) for n in ("strata", "runc", "crun")} if levels else {}


def peak_rss_kib(cmd):
    # Through GNU time: a child forked from this Python process would report
    # Python's own pages as its peak.
    out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", os.path.join(args.work, "rss")] + cmd, stdout=DEVNULL, stderr=DEVNULL)
    return int(open(os.path.join(args.work, "rss")).read().split()[-1])


rss = []
for _ in range(5):
    i = new_id()
    rss.append(peak_rss_kib([STRATA, "--root", os.path.join(STATE, "state-strata"), "create", "--bundle", BUNDLE, i]))
    rt("strata", "delete", "--force", i)

print("\n| scenario | runtime | median ms | min-max ms | strata / this |")
print("| --- | --- | --- | --- | --- |")
for s, per in results.items():
    base = statistics.median(per["strata"])
    for n, xs in per.items():
        med = statistics.median(xs)
        ratio = "" if n == "strata" else "%.2f" % (base / med)
        # (Rootless, no runtime has a cgroup.)
        label = n if "rootless" in s else {"crun": "crun (cgroups off)", "strata-nocg": "strata (cgroups off)"}.get(n, n)
        print("| %s | %s | %.2f | %.2f-%.2f | %s |" % (s, label, med, min(xs), max(xs), ratio))
like = ["%s %.2f" % (s, statistics.median(per["strata-nocg"]) / statistics.median(per["crun"]))
        for s, per in results.items() if "crun" in per and "strata-nocg" in per]
print("\nLike for like, both without cgroups, strata / crun: " + ", ".join(like))
if scale_results:
    print("\nCost as work grows: median ms per operation with N sleeping containers of the same runtime already")
    print("running (%d operations per cell; delete is of a created container; crun without cgroups).\n" % args.scale_ops)
    print("| operation | runtime | " + " | ".join("N = %d" % l for l in levels) + " | N = %d / N = %d |" % (levels[-1], levels[0]))
    print("| --- | --- | " + " | ".join("---" for _ in levels) + " | --- |")
    for what in ("run", "exec", "state", "list", "delete", "state bytes per container"):
        for n, per in scale_results.items():
            cells = [per[l][what] for l in levels]
            fmt = "%.0f" if what.startswith("state bytes") else "%.2f"
            print("| %s | %s | %s | %.2f |" % (what, n, " | ".join(fmt % c for c in cells), cells[-1] / cells[0] if cells[0] else 0))
size = os.path.getsize(STRATA)
print("\nPeak RSS of `strata create` (incl. its forked setup process): median %d KiB" % statistics.median(rss))
layout = os.path.join(ROOT, "target/release/strata.layout")
print("Code layout (hack/layout): " + (open(layout).read().strip() if os.path.exists(layout) else "none"))

# The targets, beside what this run measured (medians).
def med(s, n):
    return statistics.median(results[s][n]) if results.get(s, {}).get(n) else None

targets = []
def target(what, value, limit, fmt="%.3f"):
    if value is not None:
        targets.append((what, fmt % value, fmt % limit, "yes" if value <= limit else "no"))

run, execs = "run /bin/true", "exec /bin/true"
if med(run, "crun"):
    if med(run, "strata-nocg"):
        target("run: strata / crun, both without cgroups", med(run, "strata-nocg") / med(run, "crun"), 0.7)
    target("run: strata with its cgroup / crun without", med(run, "strata") / med(run, "crun"), 0.6)
if med(run, "floor"):
    target("run: strata / the floor (unshare + chroot + exec)", med(run, "strata") / med(run, "floor"), 1.5)
if med(execs, "floor"):
    target("exec: strata / nsenter", med(execs, "strata") / med(execs, "floor"), 1.3)
target("peak RSS of strata create, KiB", statistics.median(rss), 3072, "%d")
if scale_results and "strata" in scale_results:
    per = scale_results["strata"]
    for what in ("run", "exec", "state", "delete"):
        if per[levels[0]][what]:
            target("%s with %d containers / with %d" % (what, levels[-1], levels[0]),
                   per[levels[-1]][what] / per[levels[0]][what], 1.2)
print("\n| target | measured | limit | met |")
print("| --- | --- | --- | --- |")
for t in targets:
    print("| %s | %s | <= %s | %s |" % t)
print("Stripped binary size: %.2f MiB" % (size / 1048576))
print("Machine: %d CPUs, kernel %s; %d rounds, %d operations per batch" % (os.cpu_count(), os.uname().release, args.rounds, args.batch))
json.dump({"results": results, "scale": scale_results, "peak_rss_kib": rss, "binary_bytes": size, "rounds": args.rounds, "batch": args.batch}, open(args.out, "w"), indent=1)
print("Raw numbers: %s" % args.out)
