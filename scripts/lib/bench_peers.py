#!/usr/bin/env python3
"""The arithmetic of scripts/bench-peers, apart from its shell plumbing.

  bench_peers.py audit LOG USER RUN_GROUP T0 T1 TICK...   one operator's writes, from the
      API server's audit log: every write of the user USER that the API server answered between T0 and T1 (epoch seconds); the runs (creates of
      backups in RUN_GROUP) and Jobs each measured TICK (epoch of its minute) created, and the
      delay from the tick to each Job's creation. Prints one JSON object.
  bench_peers.py sample OUT   until SIGTERM: the agent processes of pods (baas agent, K8up's
      restic wrapper, the plain restic script) and their restic children, when each started
      and was last seen (to 10 ms) and its peak RSS (VmHWM); writes OUT (JSON) on SIGTERM
  bench_peers.py agent-report FILE   the agent figures of the three side by side
  bench_peers.py report FILE...   the figures of both operators side by side, with their ratio
      (baas / K8up), from the JSON files that bench-peers writes per operator and scale.
"""
import datetime
import json
import sys
from collections import Counter


def epoch(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[max(0, -(-len(values) * p // 100) - 1)]


def audit(log, user, run_group, t0, t1, ticks):
    t0, t1, ticks = float(t0), float(t1), [float(t) for t in ticks]
    writes, failed, runs, jobs, delays = Counter(), 0, Counter(), Counter(), []
    # the writes of the 25 s after each tick, what a tick needs before its last Job: divided
    # by the API server's write rate, the floor of tick-to-Job (as scripts/bench-operator)
    tick_writes = Counter()
    # and everyone's writes in the same seconds (the Job controller answers each new Job with
    # writes of its own), which the API server takes at the same rate
    all_tick_writes = Counter()
    with open(log) as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("stage") != "ResponseComplete":
                continue
            at = epoch(event["stageTimestamp"])
            if not t0 <= at < t1:
                continue
            windows = [t for t in ticks if t <= at < t + 25]
            all_tick_writes.update(windows)
            if event.get("user", {}).get("username") != user:
                continue
            ref = event.get("objectRef", {})
            resource = ref.get("resource", "?") + ("/" + ref["subresource"] if ref.get("subresource") else "")
            if ref.get("apiGroup"):
                resource += "." + ref["apiGroup"]
            code = event.get("responseStatus", {}).get("code", 0)
            writes[f"{event['verb']} {resource}"] += 1
            tick_writes.update(windows)
            if code >= 300:
                failed += 1
            if event["verb"] != "create" or code >= 300:
                continue
            received = epoch(event["requestReceivedTimestamp"])
            tick = max((t for t in ticks if t <= received < t + 60), default=None)
            if tick is None:
                continue
            if ref.get("resource") == "backups" and ref.get("apiGroup") == run_group:
                runs[tick] += 1
            elif ref.get("resource") == "jobs" and ref.get("apiGroup") == "batch":
                jobs[tick] += 1
                delays.append(received - tick)
    return {
        "writes": dict(writes),
        "writes_failed": failed,
        "runs_per_tick": [runs[t] for t in ticks],
        "jobs_per_tick": [jobs[t] for t in ticks],
        "writes_25s_per_tick": [tick_writes[t] for t in ticks],
        "all_writes_25s_per_tick": [all_tick_writes[t] for t in ticks],
        "delay_p50": percentile(delays, 50),
        "delay_p99": percentile(delays, 99),
        "delay_max": max(delays) if delays else None,
    }


def fmt(value, unit=""):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


def ratio(baas, k8up):
    if baas is None or k8up is None or k8up == 0:
        return "n/a"
    return f"{baas / k8up:.2f}"


def report(files):
    results = {}
    for name in files:
        with open(name) as f:
            r = json.load(f)
        results[(r["scale"], r["operator"])] = r
    for scale in sorted({s for s, _ in results}):
        k, b = results.get((scale, "k8up")), results.get((scale, "baas"))
        if not k or not b:
            print(f"== {scale} Schedules: only {'baas' if b else 'K8up'} was measured")
            continue
        print(f"== operator at scale: {scale} Schedules in {b['namespaces']} namespaces, every minute, "
              f"{b['ticks']} measured ticks (Jobs without pods)")
        print(f"{'':44} {'K8up':>12} {'baas':>12} {'baas/K8up':>10}")

        def row(label, kv, bv, unit="", target=""):
            print(f"{label:44} {fmt(kv, unit):>12} {fmt(bv, unit):>12} {ratio(bv, kv):>10}  {target}")

        row("peak RSS (VmHWM), MiB", k["peak_rss_kib"] / 1024, b["peak_rss_kib"] / 1024, "", "target <= 0.5")
        row("steady RSS (end of the last tick), MiB", k["steady_rss_kib"] / 1024, b["steady_rss_kib"] / 1024, "", "target <= 0.5")
        row("CPU, % of one core over the ticks", k["cpu_percent"], b["cpu_percent"])
        ms = lambda v: None if v is None else round(v * 1000)
        for key, label in (("delay_p50", "tick->Job p50, ms"), ("delay_p99", "tick->Job p99, ms"), ("delay_max", "tick->Job max, ms")):
            row(label, ms(k["audit"][key]), ms(b["audit"][key]), "", "target <= 1" if key == "delay_p99" else "")
        expected = scale
        print(f"{'runs created per tick (expected ' + str(expected) + ')':44} "
              f"{','.join(map(str, k['audit']['runs_per_tick'])):>12} {','.join(map(str, b['audit']['runs_per_tick'])):>12}")
        print(f"{'Jobs created per tick':44} "
              f"{','.join(map(str, k['audit']['jobs_per_tick'])):>12} {','.join(map(str, b['audit']['jobs_per_tick'])):>12}")
        kruns, bruns = sum(k["audit"]["runs_per_tick"]), sum(b["audit"]["runs_per_tick"])
        kw, bw = sum(k["audit"]["writes"].values()), sum(b["audit"]["writes"].values())
        row("API writes per run (audit log)", kw / kruns if kruns else None, bw / bruns if bruns else None, "", "target <= 1")
        row("API writes per run (client's own metrics)", k["client_writes"] / kruns if kruns else None,
            b["client_writes"] / bruns if bruns else None)
        row("failed writes (4xx/5xx) over the ticks", k["audit"]["writes_failed"], b["audit"]["writes_failed"])
        rate = b.get("api_write_rate")
        if rate and "writes_25s_per_tick" in b["audit"]:
            per_tick = lambda r, key="writes_25s_per_tick": sum(r["audit"][key]) / len(r["audit"][key])
            floor = lambda r: per_tick(r) / rate
            print(f"API server write rate (small creates, measured in this run): {rate:.0f}/s")
            row("writes in the 25 s after a tick", per_tick(k), per_tick(b))
            row("tick->Job floor (those writes / rate), ms", round(floor(k) * 1000), round(floor(b) * 1000))
            row("tick->Job p99 / floor", k["audit"]["delay_p99"] / floor(k) if floor(k) else None,
                b["audit"]["delay_p99"] / floor(b) if floor(b) else None, "", "baas target <= 1.25")
            if "all_writes_25s_per_tick" in b["audit"]:
                per_tick_all = lambda r: per_tick(r, "all_writes_25s_per_tick")
                row("all clients' writes in those 25 s", per_tick_all(k), per_tick_all(b))
                row("tick->Job floor, all clients' writes, ms", round(per_tick_all(k) / rate * 1000),
                    round(per_tick_all(b) / rate * 1000))
        print("writes per run by verb and resource (audit log):")
        keys = sorted(set(k["audit"]["writes"]) | set(b["audit"]["writes"]),
                      key=lambda x: -(k["audit"]["writes"].get(x, 0) + b["audit"]["writes"].get(x, 0)))
        for key in keys:
            kv = k["audit"]["writes"].get(key, 0) / kruns if kruns else None
            bv = b["audit"]["writes"].get(key, 0) / bruns if bruns else None
            print(f"  {key:42} {fmt(kv):>12} {fmt(bv):>12}")
        print()


PLAIN_MARKER = "plain-restic-bench"


def classify(argv):
    name = argv[0].rsplit("/", 1)[-1]
    if name == "baas" and argv[1:2] == ["agent"]:
        return "baas"
    if name == "k8up" and argv[1:2] == ["restic"]:
        return "k8up"
    if name in ("sh", "dash", "bash") and any(PLAIN_MARKER in a for a in argv):
        return "restic"
    if name == "restic":
        return "restic-child"
    return None


def sample(out):
    """Times each agent process from its start, as the kernel recorded it, to its last sight.
    The whole of /proc is scanned every 0.1 s for new processes; those found are looked at
    every 10 ms, so that a run of about a second is timed to 10 ms at both ends, not 0.1 s."""
    import os
    import signal
    import time

    hz = os.sysconf("SC_CLK_TCK")
    seen, watched, stop = {}, {}, []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def stat(pid):  # (state, start in seconds since the epoch)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return fields[0], time.time() - uptime + int(fields[19]) / hz

    def hwm_kib(pid):
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)

    scan = 0
    while not stop:
        now = time.time()
        if scan == 0:
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) in watched:
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().decode(errors="replace").split("\0")[:-1]
                    kind = classify(argv) if argv else None
                    if kind is None:
                        continue
                    with open(f"/proc/{pid}/cgroup") as f:
                        if "pod" not in f.read():  # only the processes of pods
                            continue
                    _, started = stat(pid)
                except (OSError, IndexError, ValueError):
                    continue
                watched[int(pid)] = kind
                entry = seen.setdefault(kind, {"first": started, "last": now, "hwm_kib": 0, "pids": []})
                entry["first"] = min(entry["first"], started)
                entry["pids"].append(int(pid))
        for pid, kind in list(watched.items()):
            try:
                state, _ = stat(pid)
                hwm = hwm_kib(pid) if state != "Z" else 0
            except (OSError, IndexError, StopIteration, ValueError):
                state = "gone"
            if state in ("Z", "gone"):  # exited: its last sight stands
                del watched[pid]
                continue
            entry = seen[kind]
            entry["last"] = now
            entry["hwm_kib"] = max(entry["hwm_kib"], hwm)
        scan = (scan + 1) % 10
        time.sleep(0.01)
    with open(out, "w") as f:
        json.dump(seen, f)


def agent_report(name):
    with open(name) as f:
        r = json.load(f)
    mib = r["bytes"] / 1048576
    print(f"== agent: {mib:.0f} MiB in {r['files']} files ({r['large']} large, the rest small), "
          f"restic {r['restic_version']}, S3 on the cluster's rclone")
    print(f"{'':34} {'restic':>10} {'K8up':>10} {'baas':>10} {'baas/K8up':>10} {'baas/restic':>12}")
    for step, label in (("full", "full backup"), ("incremental", "incremental (1 % changed)"), ("restore", "restore of the whole PVC")):
        t = {who: r["runs"][who][step]["seconds"] for who in ("restic", "k8up", "baas")}
        rate = {who: mib / s if s else None for who, s in t.items()}
        print(f"{label + ', MiB/s':34} " + " ".join(f"{fmt(rate[w]):>10}" for w in ("restic", "k8up", "baas"))
              + f" {ratio(rate['baas'], rate['k8up']):>10} {ratio(rate['baas'], rate['restic']):>12}")
        print(f"{'  seconds':34} " + " ".join(f"{fmt(t[w]):>10}" for w in ("restic", "k8up", "baas")))
    restored = r.get("restored_bytes")
    if restored:
        # a restore that reports success but leaves the claim empty must not pass for a fast one
        print(f"{'restored into the new claim, MiB':34} "
              + " ".join(f"{fmt(restored.get(w, 0) / 1048576):>10}" for w in ("restic", "k8up", "baas")))
    for step in ("full", "incremental", "restore"):
        h = {who: r["runs"][who][step] for who in ("restic", "k8up", "baas")}
        print(f"{'agent peak RSS, ' + step + ', MiB':34} {'-':>10} "
              f"{fmt(h['k8up']['agent_hwm_kib'] / 1024):>10} {fmt(h['baas']['agent_hwm_kib'] / 1024):>10} "
              f"{ratio(h['baas']['agent_hwm_kib'], h['k8up']['agent_hwm_kib']):>10}")
        print(f"{'restic peak RSS, ' + step + ', MiB':34} "
              + " ".join(f"{fmt(h[w]['restic_hwm_kib'] / 1024):>10}" for w in ("restic", "k8up", "baas")))
    print("targets: baas/K8up throughput >= 1, baas/restic >= 0.97")


def main():
    if sys.argv[1] == "audit":
        log, user, group, t0, t1, *ticks = sys.argv[2:]
        print(json.dumps(audit(log, user, group, t0, t1, ticks)))
    elif sys.argv[1] == "sample":
        sample(sys.argv[2])
    elif sys.argv[1] == "agent-report":
        agent_report(sys.argv[2])
    elif sys.argv[1] == "report":
        report(sys.argv[2:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
