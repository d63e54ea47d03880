"""Percentiles of the probe lines in a benches/worker-load result directory.

Usage: provider-round-trips.py <result dir> [calls]   (see provider-round-trips.patch)
Worker lines: headers round trip per endpoint, and the STT / chat first token / speech first
byte waits less the benchmark's configured latencies; stand-in lines: how late each first
byte left after its deadline. All in milliseconds.
"""
import collections
import re
import sys

CONFIGURED_US = {"stt": 150_000, "llm": 300_000, "tts": 200_000}


def percentiles(values_us):
    v = sorted(values_us)
    pick = lambda q: v[min(len(v) - 1, int(len(v) * q / 100))] / 1000
    return " ".join(f"p{q}={pick(q):.2f}" for q in (50, 90, 99, 99.9)) + f" max={v[-1] / 1000:.1f} n={len(v)}"


def probe_lines(path, pattern):
    found = collections.defaultdict(list)
    for line in open(path):
        m = re.search(pattern, line)
        if m:
            found[m.group(1)].append(int(m.group(2)))
    return found


def main():
    out, calls = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "1000"
    worker = probe_lines(f"{out}/worker-active-{calls}.log", r"PROBE (\S+) (\d+)")
    for name, values in worker.items():
        beyond = [x - CONFIGURED_US.get(name, 0) for x in values]
        label = "headers round trip" if name.startswith("hdr") else "wait beyond configured"
        print(f"worker {name} {label} (ms): {percentiles(beyond)}")
    standin = probe_lines(f"{out}/standin-active-{calls}.log", r"PROBE late (\w+) (\d+)")
    for name, values in standin.items():
        print(f"stand-in {name} first byte after its deadline (ms): {percentiles(values)}")


if __name__ == "__main__":
    main()
