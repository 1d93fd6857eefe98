"""How long `pilog repair` takes to rebuild a damaged sealed segment, against reading it.

Run from the repository root:

    .venv/bin/python tools/bench_repair.py             # a 16 MiB segment, 5 runs per row
    .venv/bin/python tools/bench_repair.py --mib 4 --runs 3

One segment of `--mib` MiB of 139-byte frames (the reference reading's size) is built in
memory, then damaged: a flipped byte at 1/16, 1/2 and 15/16 of it and a zeroed 4 KiB page at
1/4 (a flash page lost). Rows, each the median of `--runs`:

    baseline  `scan_frames` over the intact segment: what every reader pays to read it
    intact    `plan_repair` + `repaired_bytes` of the intact segment (nothing to resync)
    damaged   the same on the damaged segment: four resyncs, fillers for the lost seqs

File I/O is left out (it is one read and one write of the segment, whatever the damage).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from pilog.log.format import SegmentHeader, encode_frame, scan_frames
from pilog.log.salvage import plan_repair, repaired_bytes

PAYLOAD_BYTES = 122  # the reference reading: a 139-byte frame
BASE = 10_000_000


def build(mib: int) -> tuple[bytes, bytes, bytes, int]:
    """(epoch, intact segment, damaged segment, last seq)."""
    epoch = os.urandom(16)
    data = bytearray(SegmentHeader(epoch, BASE, 0, "bench").encode())
    seq = BASE
    while len(data) < mib << 20:
        data += encode_frame(seq, os.urandom(PAYLOAD_BYTES))
        seq += 1
    intact = bytes(data)
    n = len(data)
    for at in (n // 16, n // 2, n * 15 // 16):
        data[at] ^= 0xFF
    page = n // 4
    data[page : page + 4096] = bytes(4096)
    return epoch, intact, bytes(data), seq - 1


def median_s(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    epoch, intact, damaged, last = build(args.mib)
    header_size = SegmentHeader(epoch, BASE, 0, "bench").size

    def read() -> object:
        out: list[tuple[int, bytes]] = []
        return scan_frames(intact, header_size, BASE, out)

    lost = 0

    def repair(data: bytes) -> Callable[[], object]:
        def run() -> object:
            nonlocal lost
            header, plan = plan_repair(data, "bench.seg", BASE, last, epoch, "bench", 0)
            lost = plan.lost_count
            return repaired_bytes(header, plan, lambda seq, previous: b"lost")

        return run

    records = last - BASE + 1
    print(f"segment: {len(intact) / 2**20:.1f} MiB, {records} records, medians of {args.runs}")
    base_s = median_s(read, args.runs)
    print(f"  baseline (read)   {base_s:7.3f} s   1.00x")
    for name, data in (("intact", intact), ("damaged", damaged)):
        s = median_s(repair(data), args.runs)
        print(f"  {name:<8} repair  {s:7.3f} s  {s / base_s:5.2f}x   lost {lost} record(s)")


if __name__ == "__main__":
    main()
