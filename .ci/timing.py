"""Print where a CI run's time went, as the last lines of its output (CI shows the tail of a long log).

  python3 .ci/timing.py start STATE          record the CPU counters (/proc/stat) and the time
  python3 .ci/timing.py report STATE JUNIT   the machine, its CPU steal over the run, the slowest tests

A slow run then says whether the machine was slow (steal: another tenant had the CPU) or a test was.
"""

import json
import os
import sys
import time
import xml.etree.ElementTree as ET


def _cpu() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def start(state: str) -> None:
    with open(state, "w") as f:
        json.dump({"cpu": _cpu(), "time": time.time()}, f)


def report(state: str, junit: str) -> None:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "?")
    print(f"[ci-timing] cpu {model}, {os.cpu_count()} cpus ({len(os.sched_getaffinity(0))} usable), "
          f"load {open('/proc/loadavg').read().split()[:3]}")
    if os.path.exists(state):
        before = json.load(open(state))
        delta = [b - a for a, b in zip(before["cpu"], _cpu())]
        total = sum(delta[:8]) or 1                # user nice system idle iowait irq softirq steal
        busy = 100 * (total - delta[3] - delta[4]) / total
        print(f"[ci-timing] {time.time() - before['time']:.0f} s wall; cpu busy {busy:.0f}%, "
              f"iowait {100 * delta[4] / total:.0f}%, steal {100 * delta[7] / total:.0f}%")
    if not os.path.exists(junit):
        print("[ci-timing] no test report (pytest did not run or did not finish)")
        return
    cases = [(float(c.get("time", 0)), f"{c.get('classname', '')}::{c.get('name', '')}")
             for c in ET.parse(junit).iter("testcase")]
    by_dir: dict[str, float] = {}
    for t, name in cases:
        parts = name.split(".")
        key = "/".join(parts[:2]) if len(parts) > 2 else parts[0]
        by_dir[key] = by_dir.get(key, 0.0) + t
    print(f"[ci-timing] {len(cases)} tests, {sum(t for t, _ in cases):.0f} s in all; by folder: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(by_dir.items(), key=lambda kv: -kv[1])))
    for t, name in sorted(cases, reverse=True)[:12]:
        print(f"[ci-timing] {t:7.1f} s  {name}")


if __name__ == "__main__":
    {"start": lambda: start(sys.argv[2]), "report": lambda: report(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
