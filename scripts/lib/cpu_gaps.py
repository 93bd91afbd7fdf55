"""A second reading of the host's steal, for checking /proc/stat by hand: a busy loop on one
CPU for SECONDS, and the wall-clock gaps over 0.5 ms in it (the CPU was taken away). On an
otherwise idle machine those gaps are the host's. Usage, CPU 1 for 5 s, beside /proc/stat:

    s=$(awk '$1=="cpu1"{print $9}' /proc/stat); taskset -c 1 python3 scripts/lib/cpu_gaps.py 5 1; \
        echo "steal $(( $(awk '$1=="cpu1"{print $9}' /proc/stat) - s )) ticks of 1/$(getconf CLK_TCK) s"
"""
import sys
import time

seconds, cpu = float(sys.argv[1]), sys.argv[2]
end = time.perf_counter_ns() + int(seconds * 1e9)
last = time.perf_counter_ns()
gaps = longest = 0
while last < end:
    now = time.perf_counter_ns()
    if now - last > 500_000:
        gaps += now - last
        longest = max(longest, now - last)
    last = now
print(f"cpu{cpu}: gaps over 0.5 ms {gaps / 1e6:.1f} ms in {seconds:.0f} s, longest {longest / 1e6:.2f} ms")
